"""scripts/demo.sh: bad settings and `down`'s safety, without starting a cluster (issue 19).

The full up/down cycle on both runtimes is scripts/demo-check.sh, which CI (.ci/run) runs
before the suite; these are the cases that need no engine: a bad setting is one line and
changes nothing, `down` deletes only a folder the demo made, and it never signals a process
that is not the demo's daemon, even when the recorded PID now belongs to another process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "scripts" / "demo.sh"


def demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEMO), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"RUNTIME": "lxc"}, "RUNTIME='lxc'"),
        ({"DEMO_PORT": "99999"}, "DEMO_PORT='99999'"),
        ({"DEMO_PORT": "http"}, "DEMO_PORT='http'"),
        ({"DEMO_DIR": "relative/dir"}, "DEMO_DIR='relative/dir'"),
        ({"DEMO_DIR": "/"}, "DEMO_DIR='/'"),
    ],
)
def test_bad_setting_is_one_line_and_changes_nothing(
    tmp_path: Path, setting: dict[str, str], named: str
) -> None:
    env = {"DEMO_DIR": str(tmp_path / "demo"), **setting}
    # `up` only where a regression could not start a cluster: start-engines.sh rejects "lxc".
    for command in ("up", "down") if "RUNTIME" in setting else ("down",):
        result = demo(command, **env)
        assert result.returncode == 1
        assert named in one_line(result.stderr)
    assert not (tmp_path / "demo").exists()


def test_unknown_command_is_one_line(tmp_path: Path) -> None:
    # Under a regular file, so that a regression (taking it for `up`) cannot start a cluster.
    (tmp_path / "file").touch()
    result = demo("sideways", DEMO_DIR=str(tmp_path / "file" / "demo"))
    assert result.returncode == 1
    assert "unknown command 'sideways'" in one_line(result.stderr)


@pytest.mark.parametrize("as_symlink", [False, True])
def test_down_refuses_a_folder_the_demo_did_not_make(tmp_path: Path, as_symlink: bool) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("data")
    target = precious
    if as_symlink:
        target = tmp_path / "link"
        target.symlink_to(precious)
    result = demo("down", DEMO_DIR=str(target))
    assert result.returncode == 1
    assert "not a demo folder" in one_line(result.stderr)
    assert (precious / "keep").read_text() == "data"


def test_down_without_a_demo_is_a_no_op(tmp_path: Path) -> None:
    result = demo("down", DEMO_DIR=str(tmp_path / "never-started"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "demo stopped"


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not the demo's daemon (as after the daemon died and its PID was reused)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(10)


def test_down_never_signals_a_process_that_is_not_the_demo_daemon(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / ".shoal-demo").touch()
    (folder / "daemon.pid").write_text(f"{bystander.pid}\n")
    result = demo("down", DEMO_DIR=str(folder))
    assert result.returncode == 0, result.stderr
    assert bystander.poll() is None, "down signalled a process that is not the demo's daemon"
    assert not folder.exists()
