"""Issue 17, item 5: docker's progress display for ``service create/update/rollback``, on a
real daemon and engine.

In a real terminal (tmux, the command run under ``script`` so its raw output is kept too) the
block is redrawn in place: the raw output moves the cursor up, and the screen at the end holds
the block exactly once in its final state (one line per slot with docker's full bar, overall
progress, ``verify: Service converged``; a rollback under its ``rollback:`` header). Through a
pipe, docker's plain lines without the per-change noise: four replicas print fewer than ten.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import SHOAL, TEST_IMAGE, ShoalNode, wait_until

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]
FULL_BAR = "[" + "=" * 50 + ">]"


class Terminal:
    """A tmux server of the test's own (its own socket), one 150x50 window per command."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.socket = base / "tmux.sock"
        self.env = env
        self.runs = 0

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, env=self.env, timeout=30
        )
        assert result.returncode == 0, f"tmux {args}: {result.stderr}"
        return result.stdout

    def run(self, *command: str, timeout: float = 180) -> tuple[str, bytes]:
        """Run ``command`` in a fresh window; (the screen when it exited, its raw output)."""
        self.runs += 1
        name, raw = f"run{self.runs}", self.socket.parent / f"run{self.runs}.raw"
        # script keeps the raw bytes; `exec cat` keeps the window (and its screen) after the exit.
        shell = f"script -qfec {shlex.quote(shlex.join(command))} {raw}; echo EXIT=$?; exec cat"
        self.tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "50", shell)

        def finished() -> str:
            text = self.tmux("capture-pane", "-p", "-t", name)
            return text if "EXIT=" in text else ""

        screen = wait_until(
            finished,
            timeout,
            interval=0.3,
            what=f"{command} to finish in the terminal",
        )
        return screen, raw.read_bytes()

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[ShoalNode], Terminal]]:
    made: list[Terminal] = []

    def make(node: ShoalNode) -> Terminal:
        made.append(Terminal(tmp_path, node.env()))
        return made[-1]

    yield make
    for term in made:
        term.close()


def screen_lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.splitlines() if line.strip()]


def test_progress_in_place_in_a_terminal_and_plain_through_a_pipe(
    node_factory: Factory, terminal: Callable[[ShoalNode], Terminal]
) -> None:
    node = node_factory().start()
    node.init()

    # Through a pipe: one line per slot once it runs, then the final lines.
    plain = node.ok("service", "create", "--name", "plain", "--replicas", "4", TEST_IMAGE, "sleep", "3600")
    lines = plain.stdout.splitlines()
    assert len(lines) < 10, lines
    assert sorted(lines[1:5]) == [f"{slot}/4: running" for slot in range(1, 5)], lines
    assert lines[5:] == [
        "overall progress: 4 out of 4 tasks",
        "verify: Waiting 5 seconds to verify that tasks are stable...",
        "verify: Service converged",
    ], lines
    assert "\x1b" not in plain.stdout
    scaled = node.ok("service", "scale", "plain=5").stdout.splitlines()
    assert scaled[0] == "plain scaled to 5" and scaled[-2:] == [
        "overall progress: 5 out of 5 tasks",
        "verify: Service converged",
    ], scaled
    assert sorted(scaled[1:-2]) == [f"{slot}/5: running" for slot in range(1, 6)], scaled

    # In a terminal: the block redrawn in place, its final state once on the screen.
    term = terminal(node)
    create = (
        *SHOAL, "service", "create", "--name", "web", "--replicas", "4",
        "--stop-signal", "KILL", "--update-monitor", "1s", "--update-parallelism", "2",
        "--rollback-monitor", "1s", "--rollback-parallelism", "2",
        TEST_IMAGE, "sleep", "3600",
    )  # fmt: skip
    screen, raw = term.run(*create)
    assert re.search(rb"\x1b\[\d+A", raw), raw[-400:]  # the cursor went back up to redraw
    shown = screen_lines(screen)
    assert "EXIT=0" in shown, screen
    block = shown[shown.index("overall progress: 4 out of 4 tasks") :]
    assert block == [
        "overall progress: 4 out of 4 tasks",
        *(f"{slot}/4: running   {FULL_BAR}" for slot in range(1, 5)),
        "verify: Service converged",
        "EXIT=0",
    ], screen
    assert "Waiting" not in screen  # replaced in place, not left above

    # An update through a pipe: bounded too.
    update = node.ok("service", "update", "--args", "sleep 3601", "web", timeout=180)
    assert len(update.stdout.splitlines()) < 10, update.stdout
    assert update.stdout.splitlines()[-1] == "verify: Service converged", update.stdout

    # A rollback in the terminal: shown as docker shows it.
    screen, raw = term.run(*SHOAL, "service", "rollback", "web")
    shown = screen_lines(screen)
    assert "EXIT=0" in shown, screen
    assert shown[shown.index("rollback: manually requested rollback") :] == [
        "rollback: manually requested rollback",
        "overall progress: rolling back update: 4 out of 4 tasks",
        *(f"{slot}/4: running   {FULL_BAR}" for slot in range(1, 5)),
        "verify: Service converged",
        "EXIT=0",
    ], screen
