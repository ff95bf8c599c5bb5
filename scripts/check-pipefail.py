#!/usr/bin/env python3
"""Find shell pipelines that fail at random under ``set -o pipefail`` (issue 19).

Why: in ``producer | grep -q word`` grep exits at its first match; a producer still writing then
gets SIGPIPE, exits 141, and ``pipefail`` makes the whole pipeline fail although the word was
found. How often depends on timing, so such a line passes a few runs and breaks a demo under
load. The same holds for every reader that stops early: ``grep -q/-m/-l``, ``head``, ``sed q``.

The fix is to let the reader see all of its input: capture the producer's output first
(``out="$(producer)"; grep -q word <<<"$out"``) or use a reader that reads to the end
(``grep -c``, ``grep >/dev/null``). A line that is safe for a reason this check cannot see is
accepted with a trailing ``# pipefail-ok: <why>``.

Usage: scripts/check-pipefail.py [FILE...]   (default: every shell script git tracks)
Prints ``file:line: ...`` per finding and exits 1 when there is one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PIPEFAIL = re.compile(r"^\s*set\s+(-\w+\s+)*-\w*o\s+pipefail\b", re.M)
SHEBANG = re.compile(r"^#!.*\b(ba|da|k|z)?sh\b")
# A reader after a pipe that may exit before its input ends.
EARLY_READER = re.compile(
    r"""(?<![|])\|\s*(?:
        grep\b[^|;&]*?\s(?:-[A-Za-z]*[qlmL][A-Za-z0-9]*|--quiet|--silent|--max-count\S*|--files-with-matches)\b
      | head\b
      | sed\b[^|]*?['"][^'"]*(?<![A-Za-z/\\])q(?![A-Za-z])[^'"]*['"]
      | awk\b[^|]*?\bexit\b
    )""",
    re.X,
)
ALLOW = "# pipefail-ok:"


def shell_scripts(root: Path) -> list[Path]:
    """Every tracked file that is a shell script: a ``.sh`` name or a shell shebang."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    found = []
    for name in filter(None, listed):
        path = root / name
        if not path.is_file():
            continue
        if name.endswith(".sh"):
            found.append(path)
            continue
        try:
            with path.open("rb") as handle:
                first = handle.readline(200).decode("utf-8", "replace")
        except OSError:
            continue
        if SHEBANG.match(first):
            found.append(path)
    return found


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines (a trailing ``\\`` or ``|``) and drop comments; keep the first line number."""
    joined: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not pending:
            start = number
        if line.lstrip().startswith("#") and ALLOW not in line:
            line = ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if line.endswith("|") and not line.endswith("||"):
            pending += line + " "
            continue
        joined.append((start, pending + line))
        pending = ""
    if pending:
        joined.append((start, pending))
    return joined


def strip_comment(line: str) -> str:
    """Cut a trailing ``  # comment`` (a ``#`` after blank space, so ``${#x}`` stays)."""
    match = re.search(r"\s#", line)
    return line[: match.start()] if match else line


def findings(path: Path) -> list[str]:
    """One ``file:line: ...`` message per early-exit reader in a pipefail script."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not PIPEFAIL.search(text):
        return []
    shown = os.path.relpath(path)
    if shown.startswith(".."):
        shown = str(path)
    out = []
    for number, line in logical_lines(text):
        if ALLOW in line:
            continue
        match = EARLY_READER.search(strip_comment(line))
        if match:
            reader = " ".join(match.group(0).split())
            out.append(
                f"{shown}:{number}: '{reader}' may exit before its input ends; under pipefail the "
                "writer's SIGPIPE fails the pipeline at random: capture the output first "
                '(out="$(cmd)"; grep -q x <<<"$out") or mark the line "# pipefail-ok: <why>"'
            )
    return out


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    paths = [Path(arg) for arg in argv] if argv else shell_scripts(root)
    problems = [problem for path in paths for problem in findings(path)]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
