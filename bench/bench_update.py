"""Rolling update of 20 replicas (parallelism 2, delay 0, stop-first) and its rollback, shoal
beside Docker Swarm mode on the same dockerd in the same run.

Method (shared/reference/swarm-anchor-on-this-machine.md): the clock starts just before the
``service update`` command and stops at the end of the first poll that shows all N tasks
desired Running, currently Running, on the target image. Images by ID (``shoal-busybox:1`` and
``:2`` differ), nothing pulled. The rollback is ``service update --rollback`` right after, with
the rollback config's defaults (parallelism 1, as in Swarm).

    .venv/bin/python bench/bench_update.py [--replicas 20] [--reps 1] [--defaults] [--no-swarm]

By default both sides run with ``--stop-grace-period 0s --restart-delay 0s`` (isolates the
orchestration cost; Swarm measured here: 16.2 s update, 31.0 s rollback). ``--defaults`` uses
Swarm's defaults (10 s grace: ~120 s update, ~230 s rollback on Swarm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench_e2e import ShoalSide, SwarmSide, image_id

POLL = 0.05


def shoal_on_image(side: ShoalSide, name: str, image: str, replicas: int) -> bool:
    tasks = side.client.call("service.ps", services=[name])["tasks"]
    running = [t for t in tasks if t["DesiredState"] == "Running" and t["State"] == "Running"]
    return len(running) == replicas and all(t["Image"] == image for t in running)


def swarm_on_image(name: str, image: str, replicas: int) -> bool:
    out = subprocess.run(
        [
            "docker",
            "service",
            "ps",
            name,
            "--no-trunc",
            "--format",
            "{{.DesiredState}}|{{.CurrentState}}|{{.Image}}",
        ],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    running = [line.split("|") for line in out if line.startswith("Running|Running")]
    return len(running) == replicas and all(parts[2].split("@")[0] == image for parts in running)


def timed(action: list[str], env: dict[str, str] | None, done: object) -> float:
    start = time.monotonic()
    subprocess.run(action, check=True, capture_output=True, env=env)
    deadline = start + 900
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {' '.join(action)}")
        time.sleep(POLL)
    return time.monotonic() - start


def run_shoal(runtime: str, replicas: int, fast: list[str], img1: str, img2: str) -> tuple[float, float]:
    side = ShoalSide(runtime)
    try:
        shoal = [sys.executable, "-m", "shoal.cli.main", "service"]
        subprocess.run(
            [
                *shoal,
                "create",
                "--detach",
                "--name",
                "upd",
                "--replicas",
                str(replicas),
                *fast,
                img1,
                "sleep",
                "3600",
            ],
            check=True,
            env=side.env,
            capture_output=True,
        )
        deadline = time.monotonic() + 300
        while not shoal_on_image(side, "upd", img1, replicas):
            if time.monotonic() > deadline:
                raise SystemExit("shoal: service did not start")
            time.sleep(0.1)
        update = timed(
            [
                *shoal,
                "update",
                "--detach",
                "--image",
                img2,
                "--update-parallelism",
                "2",
                "--update-delay",
                "0s",
                "--update-order",
                "stop-first",
                "upd",
            ],
            side.env,
            lambda: shoal_on_image(side, "upd", img2, replicas),
        )
        rollback = timed(
            [*shoal, "update", "--detach", "--rollback", "upd"],
            side.env,
            lambda: shoal_on_image(side, "upd", img1, replicas),
        )
        side.remove("upd")
        side.wait_all_removed()
        return update, rollback
    finally:
        side.close()


def run_swarm(replicas: int, fast: list[str], img1: str, img2: str) -> tuple[float, float]:
    swarm = SwarmSide()
    try:
        subprocess.run(
            [
                "docker",
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--name",
                "upd",
                "--replicas",
                str(replicas),
                *fast,
                img1,
                "sleep",
                "3600",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 300
        while not swarm_on_image("upd", img1, replicas):
            if time.monotonic() > deadline:
                raise SystemExit("swarm: service did not start")
            time.sleep(0.1)
        update = timed(
            [
                "docker",
                "service",
                "update",
                "--detach",
                "--no-resolve-image",
                "--image",
                img2,
                "--update-parallelism",
                "2",
                "--update-delay",
                "0s",
                "--update-order",
                "stop-first",
                "upd",
            ],
            None,
            lambda: swarm_on_image("upd", img2, replicas),
        )
        rollback = timed(
            ["docker", "service", "update", "--detach", "--rollback", "upd"],
            None,
            lambda: swarm_on_image("upd", img1, replicas),
        )
        swarm.remove("upd")
        return update, rollback
    finally:
        swarm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--runtime", default="docker", choices=["docker", "podman"])
    parser.add_argument("--defaults", action="store_true", help="Swarm's defaults instead of 0s grace/delay")
    parser.add_argument("--no-swarm", action="store_true")
    args = parser.parse_args()
    fast = [] if args.defaults else ["--stop-grace-period", "0s", "--restart-delay", "0s"]
    img1 = image_id(args.runtime)
    out = subprocess.run(
        [
            "docker" if args.runtime == "docker" else "podman",
            "image",
            "inspect",
            "shoal-busybox:2",
            "--format",
            "{{.Id}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    img2 = out if out.startswith("sha256:") else f"sha256:{out}"
    results: dict[str, list[tuple[float, float]]] = {"shoal": [], "swarm": []}
    for _ in range(args.reps):
        results["shoal"].append(run_shoal(args.runtime, args.replicas, fast, img1, img2))
        print(
            f"shoal ({args.runtime}): update {results['shoal'][-1][0]:.2f}s rollback {results['shoal'][-1][1]:.2f}s",
            flush=True,
        )
        if not args.no_swarm:
            results["swarm"].append(
                run_swarm(
                    args.replicas,
                    fast,
                    image_id("docker"),
                    img2 if args.runtime == "docker" else image_id("docker"),
                )
            )
            print(
                f"swarm: update {results['swarm'][-1][0]:.2f}s rollback {results['swarm'][-1][1]:.2f}s",
                flush=True,
            )
    label = (
        "defaults (10s grace, 5s restart delay)"
        if args.defaults
        else "--stop-grace-period 0s --restart-delay 0s"
    )
    print(f"\n| {args.replicas} replicas, p=2, stop-first; {label} | update (s) | rollback (s) |")
    print("|---|---|---|")
    for name, rows in results.items():
        if rows:
            upd = statistics.median(r[0] for r in rows)
            rb = statistics.median(r[1] for r in rows)
            print(f"| {name} | {upd:.2f} | {rb:.2f} |")
    if results["swarm"]:
        ratio_u = statistics.median(r[0] for r in results["shoal"]) / statistics.median(
            r[0] for r in results["swarm"]
        )
        ratio_r = statistics.median(r[1] for r in results["shoal"]) / statistics.median(
            r[1] for r in results["swarm"]
        )
        print(f"| shoal / Swarm | {ratio_u:.2f} | {ratio_r:.2f} |")
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
