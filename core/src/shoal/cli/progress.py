"""Following a service until it converges, like docker's progress output.

Both commands poll the manager every 200 ms and print a line when a slot changes state. They
exit 0 once the service converged, and 1 with the reason when it did not (a slot that keeps
failing, an update that paused or rolled back, or the timeout).
"""

from __future__ import annotations

import time
from typing import Any

import click

from shoal.cli.common import call
from shoal.cli.errors import fail


def wait_converged(
    ctx: click.Context,
    service_ref: str,
    *,
    quiet: bool,
    verify: bool = True,
    stable_for: float = 5.0,
    timeout: float = 300.0,
) -> None:
    """Follow a service until every slot runs (like docker's progress), or say why not.

    Exits 1 when the service does not converge: a slot whose tasks keep being rejected or
    failing (twice), or the timeout.
    """
    deadline = time.monotonic() + timeout
    last_lines: dict[str, str] = {}
    converged_at: float | None = None
    while True:
        services = call(ctx, "service.inspect", services=[service_ref])
        spec = services[0]["spec"]
        result = call(ctx, "service.ps", services=[service_ref])
        tasks = result["tasks"]
        live = [t for t in tasks if t["DesiredState"] in ("Running", "Ready")]
        # A global service wants one task per eligible node: as many as the orchestrator made.
        desired = int(spec["replicated"].get("replicas", 0)) if "replicated" in spec else len(live)
        running = [t for t in live if t["State"] == "Running" and t["DesiredState"] == "Running"]
        if not quiet:
            for task in sorted(live, key=lambda t: t["Slot"]):
                line = f"{task['Slot']}/{desired}: {task['State'].lower()}"
                if task["Error"]:
                    line += f" ({task['Error']})"
                if last_lines.get(str(task["Slot"])) != line:
                    last_lines[str(task["Slot"])] = line
                    click.echo(line)
        failures: dict[int, list[dict[str, Any]]] = {}
        for task in tasks:
            if task["State"] in ("Rejected", "Failed"):
                failures.setdefault(int(task["Slot"]), []).append(task)
        for slot, failed in failures.items():
            if len(failed) >= 2 and not any(t["State"] == "Running" for t in live if t["Slot"] == slot):
                reason = failed[0]["Error"] or failed[0]["State"].lower()
                fail(
                    f"service {service_ref} did not converge: task {failed[0]['ServiceName']}.{slot} "
                    f"{failed[0]['State'].lower()}: {reason}",
                    1,
                )
        if len(running) == desired and len(live) == desired:
            if converged_at is None:
                converged_at = time.monotonic()
                if not quiet:
                    click.echo(f"overall progress: {len(running)} out of {desired} tasks")
                    if verify:
                        click.echo(
                            f"verify: Waiting {int(stable_for)} seconds to verify that tasks are stable..."
                        )
            if not verify or time.monotonic() - converged_at >= stable_for:
                if not quiet:
                    click.echo(f"verify: Service {service_ref} converged")
                return
        else:
            converged_at = None
        if time.monotonic() > deadline:
            pending = [t for t in live if t["Error"]]
            reason = pending[0]["Error"] if pending else f"{len(running)} of {desired} tasks running"
            fail(f"service {service_ref} did not converge within {int(timeout)}s: {reason}", 1)
        time.sleep(0.2)


def _slot_lines(tasks: list[dict[str, Any]], last: dict[str, str], quiet: bool) -> None:
    if quiet:
        return
    live = [t for t in tasks if t["DesiredState"] in ("Running", "Ready")]
    for task in sorted(live, key=lambda t: (t["Slot"], t["NodeID"])):
        slot = str(task["Slot"] or task["Node"])
        line = f"{slot}: {task['State'].lower()} {task['Image']}"
        if task["Error"]:
            line += f" ({task['Error']})"
        if last.get(slot) != line:
            last[slot] = line
            click.echo(line)


def wait_update(
    ctx: click.Context, service_ref: str, *, quiet: bool, rollback: bool, timeout: float = 600.0
) -> None:
    """Follow a rolling update (or rollback) until it completes, pauses or rolls back."""
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    reason = ""
    while True:
        service = call(ctx, "service.inspect", services=[service_ref])[0]
        status = service.get("update_status", {})
        state = status.get("state", "UNKNOWN")
        message = status.get("message", "")
        if state == "ROLLBACK_STARTED" and not rollback:
            if not reason and not quiet:
                click.echo(f"rollback: {message}")
            reason = reason or message
        _slot_lines(call(ctx, "service.ps", services=[service_ref])["tasks"], last, quiet)
        name = service["spec"]["annotations"]["name"]
        if state == "COMPLETED" or (state == "ROLLBACK_COMPLETED" and rollback):
            if not quiet:
                click.echo(f"verify: Service {name} converged")
            return
        if state == "ROLLBACK_COMPLETED":
            fail(f"service {name} was rolled back: {reason or message}", 1)
        if state in ("PAUSED", "ROLLBACK_PAUSED"):
            fail(
                f"service {name} {'rollback' if state == 'ROLLBACK_PAUSED' else 'update'} paused: {message}",
                1,
            )
        if state == "UNKNOWN":
            # Nothing needed replacing (or the updater has not started yet): plain convergence.
            wait_converged(
                ctx, service_ref, quiet=True, verify=False, timeout=max(1.0, deadline - time.monotonic())
            )
            service = call(ctx, "service.inspect", services=[service_ref])[0]
            if service.get("update_status", {}).get("state", "UNKNOWN") == "UNKNOWN":
                if not quiet:
                    click.echo(f"verify: Service {name} converged")
                return
        if time.monotonic() > deadline:
            fail(
                f"service {name} did not finish updating within {int(timeout)}s ({message or state.lower()})",
                1,
            )
        time.sleep(0.2)
