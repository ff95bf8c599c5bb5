"""scripts/check-pipefail.py: no shell script of the project races under ``pipefail`` (issue 19).

A reader that stops early (``grep -q``, ``head``) makes its writer die of SIGPIPE; under
``set -o pipefail`` that fails the pipeline at random, which broke ``scripts/demo.sh`` on a
fresh machine. These tests run the real check on the repository and on small scripts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "scripts" / "check-pipefail.py"


def run_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, paths)], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_repository_scripts_have_no_early_reader_under_pipefail() -> None:
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr


RACY = True
SAFE = False


@pytest.mark.parametrize(
    ("line", "racy"),
    [
        ('"$BUSYBOX" --list 2>/dev/null | grep -qx httpd', RACY),
        ("dpkg-query -W pkg | grep -q 'install ok'", RACY),
        ("docker ps | head -n 1", RACY),
        ("ls |\n  grep --quiet x", RACY),
        ("seq 100 | sed -n '1p;1q'", RACY),
        ("ps | awk '/x/ {print; exit}'", RACY),
        ("if ! podman images | grep -m1 foo >/dev/null; then :; fi", RACY),
        ('out="$(busybox --list)"; grep -qx httpd <<<"$out"', SAFE),
        ("busybox --list | grep -c httpd", SAFE),
        ("sha256sum f | cut -c1-16", SAFE),
        ("cmd || grep -q x file", SAFE),
        ("# a comment: cmd | grep -q x", SAFE),
        ("busybox --list | grep -q httpd  # pipefail-ok: busybox writes one short line", SAFE),
        ('echo "${#items[@]}" | wc -l', SAFE),
        ("echo q | sed 's/q/x/'", SAFE),
        ("docker ps | tail -n 1", SAFE),
    ],
)
def test_early_reader_under_pipefail_is_named_by_file_and_line(tmp_path: Path, line: str, racy: bool) -> None:
    script = tmp_path / "script.sh"
    script.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\necho start\n{line}\n")
    result = run_check(script)
    if not racy:
        assert result.returncode == 0, result.stdout
        return
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and f"{script}:4:" in lines[0], result.stdout


def test_script_without_pipefail_is_not_flagged(tmp_path: Path) -> None:
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\nset -e\nls | grep -q x\n")
    assert run_check(script).returncode == 0
