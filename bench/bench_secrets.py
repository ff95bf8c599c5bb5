"""What secrets cost: ``service create --secret`` x K (K = 0, 1, 10, 100), 10 replicas, to 10/10.

Method: as ``bench_e2e.py`` (the clock starts before a real ``shoal service create --detach``
process and stops at the first poll showing every replica running), on one shoal node. Each
repetition runs every K in turn, so the ratios to K = 0 are taken under the same load; the
service is removed and its containers (and their secrets tmpfs) gone before the next one.
The secrets are created beforehand (not timed): the cost measured is the leader opening them
for the node, the assignment carrying them, and the runtime's tmpfs per task.

    .venv/bin/python bench/bench_secrets.py [--runtime docker|podman] [--secrets 0,1,10,100]
                                            [--replicas 10] [--reps 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import POLL_SLEEP, ShoalSide, image_id


def create(side: ShoalSide, name: str, replicas: int, image: str, secrets: list[str]) -> None:
    flags = [arg for secret in secrets for arg in ("--secret", secret)]
    subprocess.run(
        [
            sys.executable, "-m", "shoal.cli.main", "service", "create", "--detach", "--name", name,
            "--replicas", str(replicas), "--stop-grace-period", "0s", *flags, image, "sleep", "3600",
        ],
        check=True,
        env=side.env,
        capture_output=True,
    )  # fmt: skip


def timed_run(side: ShoalSide, name: str, replicas: int, image: str, secrets: list[str]) -> float:
    start = time.perf_counter()
    create(side, name, replicas, image, secrets)
    while side.running(name) != replicas:
        time.sleep(POLL_SLEEP)
    elapsed = time.perf_counter() - start
    side.remove(name)
    side.wait_all_removed()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="docker", choices=("docker", "podman"))
    parser.add_argument("--secrets", default="0,1,10,100")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    counts = [int(k) for k in args.secrets.split(",")]
    image = image_id(args.runtime)
    side = ShoalSide(args.runtime)
    try:
        names = [f"s{i}" for i in range(max(counts))]
        for name in names:
            side.client.call("secret.create", name=name, data=base64.b64encode(os.urandom(64)).decode())
        times: dict[int, list[float]] = {k: [] for k in counts}
        for rep in range(args.reps):
            for k in counts:
                times[k].append(timed_run(side, f"b{rep}k{k}", args.replicas, image, names[:k]))
        base = statistics.median(times[counts[0]])
        print(f"runtime {args.runtime}, {args.replicas} replicas, {args.reps} reps (seconds)")
        print("secrets   best     median   median/no-secrets")
        for k in counts:
            median = statistics.median(times[k])
            print(f"{k:>7}   {min(times[k]):.2f}     {median:.2f}     {median / base:.2f}")
    finally:
        side.close()


if __name__ == "__main__":
    main()
