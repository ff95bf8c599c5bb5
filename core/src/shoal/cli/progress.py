"""Following a service until it converges, drawn as docker draws it.

``service create``, ``update``, ``scale`` and ``rollback`` (without ``--detach``) poll the
manager every 200 ms and turn what they see into a ``Progress``: one line per slot (its task's
state and docker's bar), ``overall progress: N out of M tasks`` (``rolling back update:`` in a
rollback), a ``rollback: REASON`` header, and ``verify: ...``. They exit 0 once the service
converged, and 1 with the reason when it did not (a slot that keeps failing, an update that
paused or rolled back, or the timeout).

Two displays draw it (``progress_display``):

- in a terminal, ``TerminalDisplay`` redraws docker's fixed block in place with ANSI escapes
  (cursor up, erase line), only when something changed. Lines are cut to the terminal's width
  so none wraps (a wrapped line would break the redraw), and a service with more slots than
  fit on the screen (or over ``MAX_SLOT_LINES``) shows a count per state and the slots that
  are not running yet, instead of one line per slot: 50 or 500 replicas stay readable and cost
  one short redraw per change;
- otherwise (a pipe, a file, CI), ``PlainDisplay`` prints docker's plain lines without the
  per-change noise: one line per slot when it reaches its final state (or fails), then the
  final lines. Four replicas print seven lines.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.ids import short_id

#: docker's ``numberedStates``: how far along a task is, for the bar.
STAGES = {
    "new": 1,
    "allocated": 2,
    "pending": 3,
    "assigned": 4,
    "accepted": 5,
    "preparing": 6,
    "ready": 7,
    "starting": 8,
    "running": 9,
    # A job's task that exited 0: its bar is full, as docker draws it.
    "complete": 9,
}
LAST_STAGE = 9
BAR_WIDTH = 50
#: docker pads the state to its longest one ("preparing") before the bar.
STATE_WIDTH = len("preparing")
#: docker stops drawing one line per slot beyond 100 replicas; so does shoal.
MAX_SLOT_LINES = 100
#: Lines the block needs besides the slots (header, overall, verify, summary) plus a spare.
FIXED_LINES = 5
#: The longest error shown on a slot line (docker truncates errors too).
ERROR_WIDTH = 60
#: States a slot stops in: a plain display prints the slot once it reaches one.
FINAL_STATES = ("running", "complete")
POLL_SECONDS = 0.2
#: Each look at the service lists every task of it (``service.ps``), about 10 us of the
#: leader's CPU per task: 100,000 replicas every 0.2 s would keep the leader busy listing. The
#: pause between two looks grows with the listing, one second per ``TASKS_PER_POLL_SECOND``
#: tasks listed, up to ``MAX_POLL_SECONDS``; a service of up to 2,000 tasks is looked at as
#: often as before.
TASKS_PER_POLL_SECOND = 10_000
MAX_POLL_SECONDS = 5.0
#: The reason the control API records for ``service rollback`` (docker's words).
MANUAL_ROLLBACK = "manually requested rollback"


def progress_bar(state: str) -> str:
    """docker's ``[=====>      ]`` for how far a task is along its states."""
    filled = STAGES.get(state, 0) * BAR_WIDTH // LAST_STAGE
    return "[" + "=" * filled + ">" + " " * (BAR_WIDTH - filled) + "]"


@dataclass(frozen=True)
class Slot:
    """A slot's current task as the block shows it (``label`` is ``1/4`` or a node ID)."""

    label: str
    state: str
    error: str = ""


@dataclass(frozen=True)
class Progress:
    """One poll's view of a service converging: what both displays draw."""

    slots: tuple[Slot, ...]
    running: int
    desired: int
    #: ``rollback: REASON`` above the block, when the service is rolling back.
    header: str = ""
    rolling_back: bool = False
    #: The text after ``verify: ``, once every slot runs.
    verify: str = ""

    def overall(self) -> str:
        what = "rolling back update: " if self.rolling_back else ""
        return f"overall progress: {what}{self.running} out of {self.desired} tasks"


def slot_line(slot: Slot, *, bar: bool) -> str:
    """``1/4: running   [====>]``: an error, when the task has one, in place of the state."""
    if slot.error:
        error = slot.error.splitlines()[0] if slot.error.strip() else slot.error
        if len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 1] + "…"
        return f"{slot.label}: {error}"
    if not bar:
        return f"{slot.label}: {slot.state}"
    return f"{slot.label}: {slot.state.ljust(STATE_WIDTH)} {progress_bar(slot.state)}"


def block_lines(progress: Progress, *, width: int, height: int) -> list[str]:
    """The whole block for a terminal ``width`` x ``height``, no line wider than the screen."""
    lines = [progress.header] if progress.header else []
    lines.append(progress.overall())
    room = min(MAX_SLOT_LINES, max(1, height - FIXED_LINES - len(lines)))
    bar = width > len("100/100: preparing ") + BAR_WIDTH + 2
    if len(progress.slots) <= room:
        lines.extend(slot_line(slot, bar=bar) for slot in progress.slots)
    else:
        lines.extend(_summary(progress.slots, room, bar=bar))
    if progress.verify:
        lines.append(f"verify: {progress.verify}")
    return [line if len(line) < width else line[: max(1, width - 2)] + "…" for line in lines]


def _summary(slots: tuple[Slot, ...], room: int, *, bar: bool) -> list[str]:
    """Too many slots for the screen: a count per state, then the slots that are not running
    (failing ones first) as far as they fit."""
    counts = Counter(slot.state for slot in slots)
    order = sorted(counts, key=lambda state: (-STAGES.get(state, 0), state))
    lines = ["tasks: " + ", ".join(f"{counts[state]} {state}" for state in order)]
    behind = sorted(
        (slot for slot in slots if slot.state not in FINAL_STATES or slot.error),
        key=lambda slot: (not slot.error, STAGES.get(slot.state, 0)),
    )
    shown = behind[: max(0, room - 2)]
    lines.extend(slot_line(slot, bar=bar) for slot in shown)
    if len(behind) > len(shown):
        lines.append(f"... and {len(behind) - len(shown)} more not running")
    return lines


class Display(Protocol):
    def update(self, progress: Progress) -> None: ...

    def finish(self, progress: Progress) -> None: ...


def _terminal_size() -> tuple[int, int]:
    columns, lines = shutil.get_terminal_size((80, 24))
    return columns, lines


class QuietDisplay:
    """``-q``: nothing."""

    def update(self, progress: Progress) -> None:
        pass

    def finish(self, progress: Progress) -> None:
        pass


@dataclass
class TerminalDisplay:
    """docker's block, redrawn in place: up over the lines drawn last, each line erased and
    written again. Nothing is written when the block did not change."""

    out: TextIO
    size: Callable[[], tuple[int, int]] = field(default=lambda: _terminal_size())
    _drawn: list[str] = field(default_factory=list)

    def update(self, progress: Progress) -> None:
        width, height = self.size()
        lines = block_lines(progress, width=width, height=height)
        if lines == self._drawn:
            return
        parts = [f"\x1b[{len(self._drawn)}A\r"] if self._drawn else []
        parts.extend(f"\x1b[2K{line}\n" for line in lines)
        if len(lines) < len(self._drawn):
            parts.append("\x1b[J")  # the old block was longer: erase what is left of it
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = lines

    def finish(self, progress: Progress) -> None:
        self.update(progress)


@dataclass
class PlainDisplay:
    """docker's lines for a pipe or a file: the rollback header once, one line per slot when
    it reaches its final state (an error once per slot and message), then the final lines."""

    out: TextIO
    _said: set[str] = field(default_factory=set)

    def _say(self, line: str, key: str = "") -> None:
        """Print ``line`` unless it (or another line with the same ``key``) was printed."""
        key = key or line
        if key not in self._said:
            self._said.add(key)
            self.out.write(line + "\n")
            self.out.flush()

    def update(self, progress: Progress) -> None:
        if progress.header:
            self._say(progress.header)
        for slot in progress.slots:
            if slot.error or slot.state in FINAL_STATES:
                self._say(slot_line(slot, bar=False))
        if progress.verify:
            self._say(progress.overall(), key="overall")
            # The countdown says the same thing each second: once is enough here.
            key = "waiting" if progress.verify.startswith("Waiting") else ""
            self._say(f"verify: {progress.verify}", key=key)

    def finish(self, progress: Progress) -> None:
        self.update(progress)


def progress_display(quiet: bool, out: TextIO | None = None) -> Display:
    """The display for stdout: quiet, in place in a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    if quiet:
        return QuietDisplay()
    if stream.isatty():
        return TerminalDisplay(stream)
    return PlainDisplay(stream)


# ------------------------------------------------------------------------------- polling


def _live(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in tasks if t["DesiredState"] in ("Running", "Ready")]


def slots_of(tasks: list[dict[str, Any]], desired: int, *, global_mode: bool) -> tuple[Slot, ...]:
    """The live task of each slot (of each node, for a global service), in slot order."""
    slots = []
    for task in sorted(_live(tasks), key=lambda t: (t["Slot"], t["NodeID"])):
        if global_mode or not task["Slot"]:
            label = short_id(task["NodeID"]) if task["NodeID"] else "-"
        else:
            label = f"{task['Slot']}/{desired}"
        slots.append(Slot(label=label, state=task["State"].lower(), error=task["Error"] or ""))
    return tuple(slots)


def poll_pause(tasks_listed: int) -> float:
    """Seconds to wait before the next look at a service whose last look listed
    ``tasks_listed`` tasks (see ``TASKS_PER_POLL_SECOND``)."""
    return min(MAX_POLL_SECONDS, max(POLL_SECONDS, tasks_listed / TASKS_PER_POLL_SECOND))


def _snapshot(ctx: click.Context, service_ref: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    service = call(ctx, "service.inspect", services=[service_ref])[0]
    return service, call(ctx, "service.ps", services=[service_ref])["tasks"]


def _counts(spec: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(desired, running, live): a global service wants one task per eligible node, as many
    as the orchestrator made."""
    live = _live(tasks)
    desired = int(spec["replicated"].get("replicas", 0)) if "replicated" in spec else len(live)
    running = sum(1 for t in live if t["State"] == "Running" and t["DesiredState"] == "Running")
    return desired, running, len(live)


def _check_failures(service_ref: str, tasks: list[dict[str, Any]]) -> None:
    """A slot whose tasks were rejected or failed twice, with none running: give up."""
    failures: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:
        if task["State"] in ("Rejected", "Failed"):
            failures.setdefault(int(task["Slot"]), []).append(task)
    live = _live(tasks)
    for slot, failed in failures.items():
        if len(failed) >= 2 and not any(t["State"] == "Running" for t in live if t["Slot"] == slot):
            reason = failed[0]["Error"] or failed[0]["State"].lower()
            fail(
                f"service {service_ref} did not converge: task {failed[0]['ServiceName']}.{slot} "
                f"{failed[0]['State'].lower()}: {reason}",
                1,
            )


def _waiting(stable_for: float, converged_at: float) -> str:
    left = max(1, math.ceil(stable_for - (time.monotonic() - converged_at)))
    return f"Waiting {left} seconds to verify that tasks are stable..."


def wait_converged(
    ctx: click.Context,
    service_ref: str,
    *,
    quiet: bool,
    verify: bool = True,
    stable_for: float = 5.0,
    timeout: float = 300.0,
    display: Display | None = None,
) -> None:
    """Follow a service until every slot runs (and, with ``verify``, keeps running for
    ``stable_for`` seconds), drawing docker's progress; or say why not and exit 1."""
    shown = display or progress_display(quiet)
    deadline = time.monotonic() + timeout
    converged_at: float | None = None
    while True:
        service, tasks = _snapshot(ctx, service_ref)
        if is_job(service):
            wait_job(ctx, service_ref, quiet=quiet, display=display)
            return
        spec = service["spec"]
        desired, running, live = _counts(spec, tasks)
        slots = slots_of(tasks, desired, global_mode="replicated" not in spec)
        progress = Progress(slots=slots, running=running, desired=desired)
        if running == desired and live == desired:
            converged_at = converged_at or time.monotonic()
            if not verify or time.monotonic() - converged_at >= stable_for:
                shown.finish(_with(progress, verify="Service converged"))
                return
            shown.update(_with(progress, verify=_waiting(stable_for, converged_at)))
        else:
            converged_at = None
            shown.update(progress)
            _check_failures(service_ref, tasks)
        if time.monotonic() > deadline:
            pending = [t for t in _live(tasks) if t["Error"]]
            reason = pending[0]["Error"] if pending else f"{running} of {desired} tasks running"
            fail(f"service {service_ref} did not converge within {int(timeout)}s: {reason}", 1)
        time.sleep(poll_pause(len(tasks)))


def _with(progress: Progress, **changes: Any) -> Progress:
    return Progress(**{**progress.__dict__, **changes})


def wait_update(
    ctx: click.Context, service_ref: str, *, quiet: bool, rollback: bool, timeout: float = 600.0
) -> None:
    """Follow a rolling update (or rollback) until it completes, pauses or rolls back."""
    shown = progress_display(quiet)
    deadline = time.monotonic() + timeout
    reason = ""
    while True:
        service, tasks = _snapshot(ctx, service_ref)
        if is_job(service):  # a changed job runs again: no rolling update to follow
            wait_job(ctx, service_ref, quiet=quiet)
            return
        status = service.get("update_status", {})
        state = status.get("state", "UNKNOWN")
        message = status.get("message", "")
        name = service["spec"]["annotations"]["name"]
        rolling_back = state.startswith("ROLLBACK")
        if state in ("ROLLBACK_STARTED", "ROLLBACK_PAUSED"):
            reason = reason or message
        elif state == "ROLLBACK_COMPLETED" and rollback and not reason:
            reason = MANUAL_ROLLBACK  # done before the first look: it was the one asked for
        desired, running, _ = _counts(service["spec"], tasks)
        progress = Progress(
            slots=slots_of(tasks, desired, global_mode="replicated" not in service["spec"]),
            running=running,
            desired=desired,
            header=f"rollback: {reason}" if rolling_back and reason else "",
            rolling_back=rolling_back,
        )
        if state == "COMPLETED" or (state == "ROLLBACK_COMPLETED" and rollback):
            shown.finish(_with(progress, verify="Service converged"))
            return
        if state == "ROLLBACK_COMPLETED":
            shown.finish(progress)
            fail(f"service {name} was rolled back: {reason or message}", 1)
        if state in ("PAUSED", "ROLLBACK_PAUSED"):
            shown.finish(progress)
            fail(
                f"service {name} {'rollback' if state == 'ROLLBACK_PAUSED' else 'update'} paused: {message}",
                1,
            )
        if state == "UNKNOWN":
            # Nothing needed replacing (or the updater has not started yet): plain convergence.
            deferred = _Deferred(shown)
            wait_converged(
                ctx,
                service_ref,
                quiet=quiet,
                verify=False,
                timeout=max(1.0, deadline - time.monotonic()),
                display=deferred,
            )
            service = call(ctx, "service.inspect", services=[service_ref])[0]
            if service.get("update_status", {}).get("state", "UNKNOWN") == "UNKNOWN":
                shown.finish(_with(deferred.last or progress, verify="Service converged"))
                return
        else:
            shown.update(progress)
        if time.monotonic() > deadline:
            fail(
                f"service {name} did not finish updating within {int(timeout)}s ({message or state.lower()})",
                1,
            )
        time.sleep(poll_pause(len(tasks)))


@dataclass
class _Deferred:
    """Passes updates on but keeps the final one back: the caller decides whether the update
    is really over (an updater that had not started yet is not)."""

    display: Display
    last: Progress | None = None

    def update(self, progress: Progress) -> None:
        self.last = progress
        self.display.update(progress)

    def finish(self, progress: Progress) -> None:
        self.last = _with(progress, verify="")
        self.display.update(self.last)


# ------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobProgress(Progress):
    """A job's block: docker's ``job progress: C out of T complete`` in place of the overall
    line (a job's tasks finish rather than keep running)."""

    completed: int = 0
    total: int = 0

    def overall(self) -> str:
        return f"job progress: {self.completed} out of {self.total} complete"


JOB_MODES = ("replicated_job", "global_job")


def job_progress(service: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[JobProgress, str]:
    """The current iteration's slots (or nodes) as a ``JobProgress``, and the first slot that
    gave up (no task active, none complete: its restart policy let it fail), if any."""
    spec = service["spec"]
    iteration = int(service.get("job_status", {}).get("job_iteration", 0))
    current = [t for t in tasks if int(t.get("JobIteration", 0)) == iteration]
    global_job = "global_job" in spec
    by_slot: dict[str, list[dict[str, Any]]] = {}
    for task in current:
        key = task["NodeID"] if global_job else str(task["Slot"])
        by_slot.setdefault(key, []).append(task)
    total = len(by_slot) if global_job else int(spec["replicated_job"].get("total_completions", 0))
    slots, completed, gave_up = [], 0, ""
    for key in sorted(by_slot, key=lambda k: (len(k), k)):
        group = by_slot[key]
        done = [t for t in group if t["State"] == "Complete"]
        live = [t for t in group if t["DesiredState"] in ("Running", "Ready")]
        shown = (done or live or sorted(group, key=lambda t: t["Timestamp"]))[-1]
        completed += bool(done)
        if not done and not live and not gave_up:
            gave_up = f"task {shown['ServiceName']}.{key}: {shown['Error'] or shown['State'].lower()}"
        label = short_id(key) if global_job else f"{key}/{total}"
        error = "" if done or live else shown["Error"] or ""
        slots.append(Slot(label=label, state=shown["State"].lower(), error=error))
    running = sum(1 for t in current if t["State"] == "Running" and t["DesiredState"] == "Running")
    progress = JobProgress(
        slots=tuple(slots), running=running, desired=total, completed=completed, total=total
    )
    return progress, gave_up


def is_job(service: dict[str, Any]) -> bool:
    return any(mode in service.get("spec", {}) for mode in JOB_MODES)


def wait_job(ctx: click.Context, service_ref: str, *, quiet: bool, display: Display | None = None) -> None:
    """Follow a job (``service create/update/scale`` without ``--detach``) until every slot of
    its current run completed, then print docker's ``job complete``; exit 1 when a slot's task
    failed for good. No timeout: a job runs as long as it runs (as docker waits)."""
    shown = display or progress_display(quiet)
    while True:
        service, tasks = _snapshot(ctx, service_ref)
        progress, gave_up = job_progress(service, tasks)
        if progress.total and progress.completed >= progress.total:
            shown.finish(progress)
            if not quiet:
                click.echo("job complete")
            return
        shown.update(progress)
        if gave_up:
            shown.finish(progress)
            fail(f"job {service_ref} did not complete: {gave_up}", 1)
        time.sleep(poll_pause(len(tasks)))
