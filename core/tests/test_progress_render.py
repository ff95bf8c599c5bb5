"""The progress displays of ``service create/update/scale/rollback`` (issue 17, item 5).

In a terminal: docker's block redrawn in place (cursor up, erase line), nothing written when
nothing changed, no line wider than the screen, and a service with more slots than fit shows a
summary instead. Through a pipe: one line per slot reaching its final state, then the final
lines, however many polls it took.
"""

from __future__ import annotations

import io

import pytest
from shoal.cli import progress
from shoal.cli.progress import PlainDisplay, Progress, Slot, TerminalDisplay


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(states: list[str], desired: int = 0, **extra: object) -> Progress:
    desired = desired or len(states)
    slots = tuple(Slot(f"{i}/{desired}", state) for i, state in enumerate(states, start=1))
    running = sum(1 for s in states if s == "running")
    return Progress(slots=slots, running=running, desired=desired, **extra)  # type: ignore[arg-type]


def test_bar_follows_the_task_states_like_docker() -> None:
    assert progress.progress_bar("running") == "[" + "=" * 50 + ">]"
    assert progress.progress_bar("complete") == "[" + "=" * 50 + ">]"  # a job's finished slot
    assert progress.progress_bar("new") == "[=====>" + " " * 45 + "]"
    assert progress.progress_bar("pending") == "[" + "=" * 16 + ">" + " " * 34 + "]"
    assert progress.slot_line(Slot("1/4", "running"), bar=True) == "1/4: running   [" + "=" * 50 + ">]"
    assert progress.slot_line(Slot("1/4", "running"), bar=False) == "1/4: running"
    error = progress.slot_line(Slot("2/4", "rejected", "no suitable node " * 10), bar=True)
    assert error.startswith("2/4: no suitable node") and len(error) <= 5 + progress.ERROR_WIDTH


def test_block_has_docker_lines_in_docker_order() -> None:
    shown = progress.block_lines(
        _progress(
            ["running", "running"],
            header="rollback: manually requested rollback",
            rolling_back=True,
            verify="Service converged",
        ),
        width=120,
        height=40,
    )
    assert shown == [
        "rollback: manually requested rollback",
        "overall progress: rolling back update: 2 out of 2 tasks",
        "1/2: running   [" + "=" * 50 + ">]",
        "2/2: running   [" + "=" * 50 + ">]",
        "verify: Service converged",
    ]
    narrow = progress.block_lines(_progress(["running"]), width=40, height=40)
    assert narrow == ["overall progress: 1 out of 1 tasks", "1/1: running"]  # no bar: it would wrap
    tiny = progress.block_lines(_progress(["running"]), width=20, height=40)
    assert all(len(line) < 20 for line in tiny), tiny


def test_many_slots_stay_on_the_screen() -> None:
    states = ["running"] * 57 + ["starting", "preparing", "pending"]
    failing = Slot("60/60", "rejected", "no suitable node")
    shown = progress.block_lines(
        Progress(
            slots=(*_progress(states).slots, failing),
            running=57,
            desired=61,
        ),
        width=120,
        height=10,
    )
    assert len(shown) <= 10, shown
    assert shown[0] == "overall progress: 57 out of 61 tasks"
    assert shown[1] == "tasks: 57 running, 1 starting, 1 preparing, 1 pending, 1 rejected"
    assert shown[2] == "60/60: no suitable node"  # failing first
    assert shown[-1].startswith("... and ") and shown[-1].endswith(" more not running")


def test_terminal_redraws_in_place_only_on_change() -> None:
    out = FakeTTY()
    display = TerminalDisplay(out, size=lambda: (120, 40))
    display.update(_progress(["pending", "starting"]))
    first = out.getvalue()
    assert "\x1b[" in first and "A" not in first.split("\x1b[2K")[0]  # nothing above to go back to
    assert first.count("\n") == 3
    display.update(_progress(["pending", "starting"]))
    assert out.getvalue() == first  # unchanged: nothing written
    display.update(_progress(["running", "starting"]))
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[3A\r")  # back up over the three lines, then redrawn
    assert second.count("\x1b[2K") == 3 and "1/2: running" in second
    display.finish(_progress(["running", "running"], verify="Service converged"))
    third = out.getvalue()[len(first) + len(second) :]
    assert third.startswith("\x1b[3A\r") and third.endswith("verify: Service converged\n")
    display.update(_progress(["running"]))
    assert out.getvalue().endswith("\x1b[J")  # a shorter block erases the rest of the old one


def test_plain_lines_are_bounded_however_many_polls() -> None:
    out = io.StringIO()
    display = PlainDisplay(out)
    polls = [
        ["new"] * 4,
        ["pending", "assigned", "new", "new"],
        ["preparing", "starting", "assigned", "pending"],
        ["running", "starting", "preparing", "assigned"],
        ["running", "running", "starting", "preparing"],
        ["running", "running", "running", "starting"],
        ["running"] * 4,
    ]
    for states in polls * 3:
        display.update(_progress(states))
    for left in (5, 4, 3, 2, 1):
        display.update(
            _progress(["running"] * 4, verify=f"Waiting {left} seconds to verify that tasks are stable...")
        )
    display.finish(_progress(["running"] * 4, verify="Service converged"))
    assert out.getvalue().splitlines() == [
        "1/4: running",
        "2/4: running",
        "3/4: running",
        "4/4: running",
        "overall progress: 4 out of 4 tasks",
        "verify: Waiting 5 seconds to verify that tasks are stable...",
        "verify: Service converged",
    ]


def test_display_choice() -> None:
    assert isinstance(progress.progress_display(False, FakeTTY()), TerminalDisplay)
    assert isinstance(progress.progress_display(False, io.StringIO()), PlainDisplay)
    assert isinstance(progress.progress_display(True, FakeTTY()), progress.QuietDisplay)


def _task(slot: int, node: str, state: str, desired: str = "Running", error: str = "") -> dict[str, object]:
    return {"Slot": slot, "NodeID": node, "State": state, "DesiredState": desired, "Error": error}


def test_slots_from_service_ps_rows() -> None:
    tasks = [
        _task(2, "n2", "Running"),
        _task(1, "n1", "Failed", desired="Shutdown", error="exit 1"),  # history: not shown
        _task(1, "n1", "Starting"),
    ]
    assert progress.slots_of(tasks, 2, global_mode=False) == (
        Slot("1/2", "starting"),
        Slot("2/2", "running"),
    )
    # A global service: one line per node, labelled with the node's short ID, as docker does.
    nodes = [_task(0, "abcdefghijklmnopqrstu", "Running"), _task(0, "zyxwvutsrqponmlkjihgf", "Pending")]
    assert [s.label for s in progress.slots_of(nodes, 2, global_mode=True)] == [
        "abcdefghijkl",
        "zyxwvutsrqpo",
    ]


def _rows(count: int, state: str) -> list[dict[str, object]]:
    return [
        {"Slot": n, "NodeID": "n1", "DesiredState": "Running", "State": state, "Error": ""}
        for n in range(1, count + 1)
    ]


def test_the_pause_between_looks_grows_with_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each look lists every task of the service on the leader: a 100,000-replica create
    followed every 0.2 s kept the leader listing 33 MB replies. A small service is looked at
    as often as before; a big one less often, up to MAX_POLL_SECONDS."""
    for count, expected in ((4, progress.POLL_SECONDS), (100_000, progress.MAX_POLL_SECONDS)):
        looks = [_rows(count, "Starting"), _rows(count, "Running")]
        service = {"spec": {"replicated": {"replicas": count}}}
        monkeypatch.setattr(progress, "_snapshot", lambda ctx, ref, s=service, rows=looks: (s, rows.pop(0)))
        pauses: list[float] = []
        monkeypatch.setattr(progress.time, "sleep", pauses.append)
        progress.wait_converged(None, "web", quiet=True, verify=False)  # type: ignore[arg-type]
        assert pauses == [expected], f"{count} tasks: paused {pauses}"
    assert progress.POLL_SECONDS < progress.poll_pause(20_000) < progress.MAX_POLL_SECONDS
