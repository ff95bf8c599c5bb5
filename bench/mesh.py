"""The routing mesh's cost, and how fast it forgets a dead task (issue 14; docs/benchmarks.md).

Three hosts of tests/multihost.py (network namespaces, each with its own dockerd and shoal
daemon, joined by an underlay bridge). One replica of the demo ``search`` service runs on h1
with ``-p 8080:8080``. From the underlay, with the same load generator in the same run, it
measures requests per second and p50/p99 latency:

- ``direct``: straight to the task's own address (the underlay routes the engine's bridge
  subnet through h1: one forwarding hop, as a mesh path has);
- ``mesh, node with the task``: h1's address, port 8080;
- ``mesh, node without it``: h3's address, port 8080 (forwarded over VXLAN to h1).

Rounds alternate the three paths so that load from elsewhere on the machine hits them alike.
Then a second service with two replicas is probed every 10 ms through h3's published port
while one replica's container is killed: the time from the kill to the last failed request.

    python bench/mesh.py [--duration 10] [--connections 8] [--rounds 2] [--kills 3] [--json FILE]

The load generator is wrk (Debian's ``wrk``) with ``Connection: close`` (busybox httpd closes
every connection anyway, and the mesh balances connections), else bench/meshload.py's asyncio
client. Needs root (namespaces) and the images of scripts/build-test-images.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import multihost  # noqa: E402
from harness import wait_until  # noqa: E402

MESHLOAD = str(ROOT / "bench" / "meshload.py")
IMAGE = "searchsvc:v1.0"
TASK_LABEL = "io.shoal.task.id"


def wrk(swarm: multihost.Cluster, url: str, connections: int, duration: float) -> dict[str, Any]:
    threads = min(2, connections)
    proc = swarm.client(
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
        "-H", "Connection: close", url, timeout=duration + 60,
    )  # fmt: skip
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk {url}: {proc.stderr or out}")

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return 0.0
        value, unit = float(match.group(1)), match.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    # busybox httpd closes each connection after its answer, which wrk counts as a "read"
    # socket error even though the answer arrived: only connect, write and timeout errors and
    # non-2xx answers are failed requests.
    errors = sum(int(n) for n in re.findall(r"(?:connect|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "url": url,
        "tool": "wrk",
        "connections": connections,
        "requests": int(total.group(1)) if total else 0,
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
    }


def pyload(swarm: multihost.Cluster, url: str, connections: int, duration: float) -> dict[str, Any]:
    proc = swarm.client(
        sys.executable, MESHLOAD, "load", "--connections", str(connections), "--duration", str(duration), url,
        timeout=duration + 60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"meshload {url}: {proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["tool"] = "meshload.py"
    return result


def task_container(host: multihost.Host, task_id: str) -> str:
    return str(host.engine_cli("ps", "-q", "--filter", f"label={TASK_LABEL}={task_id}").split()[0])


def answers(swarm: multihost.Cluster, url: str) -> bool:
    proc = swarm.client(sys.executable, MESHLOAD, "get", "--count", "4", "--timeout", "2", url)
    return proc.returncode == 0 and all(ok for ok, _ in json.loads(proc.stdout))


def running(swarm: multihost.Cluster, service: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        tasks = swarm.manager.running(service)
        return tasks if len(tasks) == count else None

    tasks: list[dict[str, Any]] = wait_until(found, 90, 0.2, f"{count} running tasks of {service}")
    return tasks


def time_to_recover(swarm: multihost.Cluster, via: multihost.Host) -> dict[str, float]:
    """Kill one of ``search2``'s replicas while probing ``via``:8081; seconds from the kill to
    the last failed request (0 when none failed), and how many failed."""
    before = {t["ID"]: t for t in running(swarm, "search2", 2)}
    victim = next(iter(before.values()))
    host = next(h for h in swarm.hosts if h.name == victim["Node"])
    prober = swarm.start_client(
        sys.executable, MESHLOAD, "probe", "--interval", "0.01", "--timeout", "0.3", f"http://{via.ip}:8081/"
    )
    try:
        wait_until(lambda: prober.check_alive() or sum(x["ok"] for x in prober.json_lines()) >= 20, 30, 0.1)
        killed_at = time.time()
        host.engine_cli("kill", task_container(host, victim["ID"]))

        def replaced() -> bool:
            tasks = swarm.manager.running("search2")
            return len(tasks) == 2 and victim["ID"] not in {t["ID"] for t in tasks}

        wait_until(replaced, 60, 0.1, "the replacement")
        settle = time.time() + 2.0  # two more seconds of answers after the replacement runs
        wait_until(lambda: any(x["wall"] >= settle for x in prober.json_lines()), 30, 0.1)
        lines = prober.json_lines()
    finally:
        prober.stop()
    failed = sorted(line["wall"] for line in lines if not line["ok"] and line["wall"] >= killed_at)
    # The failures the death causes come in one burst; a later burst (more than a second after
    # the previous failure) is the replacement joining before it answers.
    first: list[float] = []
    for moment in failed:
        if first and moment - first[-1] > 1.0:
            break
        first.append(moment)
    return {
        "recover_s": round(max(first) - killed_at, 3) if first else 0.0,
        "failed_requests": len(first),
        "failed_at_join": len(failed) - len(first),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument(
        "--tool", choices=("wrk", "meshload"), default="wrk" if shutil.which("wrk") else "meshload"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = wrk if args.tool == "wrk" else pyload

    swarm = multihost.Cluster(3, "docker")
    swarm.up()
    try:
        swarm.start_shoal()
        h1, _, h3 = swarm.hosts
        m = swarm.manager
        m.ok("service", "create", "--detach", "--name", "search", "-p", "8080:8080",
             "--constraint", "node.hostname==h1", IMAGE)  # fmt: skip
        (task,) = running(swarm, "search", 1)
        address = h1.engine_cli(
            "inspect", "--format", "{{.NetworkSettings.IPAddress}}", task_container(h1, task["ID"])
        ).strip()
        # The direct path: the underlay routes h1's engine bridge through h1.
        h1.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        multihost.run("ip", "-n", swarm.hub, "route", "add", f"{address}/32", "via", h1.ip)
        paths = {
            "direct": f"http://{address}:8080/",
            "mesh, node with the task": f"http://{h1.ip}:8080/",
            "mesh, node without it": f"http://{h3.ip}:8080/",
        }
        for url in paths.values():
            wait_until(lambda url=url: answers(swarm, url), 30, 0.3, f"{url} to answer")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, url in paths.items():
                results[name].append(load(swarm, url, args.connections, args.duration))
                print(name, json.dumps(results[name][-1]), flush=True)

        m.ok("service", "create", "--detach", "--name", "search2", "--replicas", "2", "-p", "8081:8080",
             "--constraint", "node.hostname!=h3", IMAGE)  # fmt: skip
        running(swarm, "search2", 2)
        wait_until(lambda: answers(swarm, f"http://{h3.ip}:8081/"), 30, 0.3, "search2 through h3")
        recoveries = [time_to_recover(swarm, h3) for _ in range(args.kills)]
        print("recoveries", json.dumps(recoveries), flush=True)
    finally:
        swarm.down()

    summary = summarise(results, recoveries, args)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "runs": results, "recoveries": recoveries}, indent=2)
        )
    return 0


def summarise(
    results: dict[str, list[dict[str, Any]]], recoveries: list[dict[str, float]], args: argparse.Namespace
) -> dict[str, Any]:
    if not results["direct"]:
        results = {}
    direct_rps = statistics.median(r["rps"] for r in results["direct"]) if results else 0.0
    paths = {}
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        paths[name] = {
            "rps_median": rps,
            "rps_runs": [r["rps"] for r in runs],
            "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "vs_direct": round(rps / direct_rps, 3) if direct_rps else None,
        }
    return {
        "command": " ".join(["python", "bench/mesh.py", *sys.argv[1:]]),
        "tool": args.tool,
        "connections": args.connections,
        "duration_s": args.duration,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, kernel {platform.release()}",
        "loadavg_at_end": os.getloadavg()[0],
        "paths": paths,
        "recover_s": [r["recover_s"] for r in recoveries],
        "recover_s_median": statistics.median(r["recover_s"] for r in recoveries) if recoveries else None,
        "failed_requests": [r["failed_requests"] for r in recoveries],
        "failed_at_join": [r["failed_at_join"] for r in recoveries],
    }


if __name__ == "__main__":
    sys.exit(main())
