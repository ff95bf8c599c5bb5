"""The routing mesh's cost, and how fast it forgets a dead task (issue 14; docs/benchmarks.md).

Three hosts of tests/multihost.py (network namespaces, each with its own dockerd and shoal
daemon, joined by an underlay bridge). One replica of the demo ``search`` service runs on h1
with ``-p 8080:8080``. From the underlay, with the same load generator in the same run, it
measures requests per second and p50/p99 latency on three paths:

- ``direct``: straight to the task's own address (the underlay routes the engine's bridge
  subnet through h1: one forwarding hop, as a mesh path has);
- ``mesh, node with the task``: h1's address, port 8080;
- ``mesh, node without it``: h3's address, port 8080 (forwarded over VXLAN to h1).

Method. Every request is a new TCP connection (``Connection: close``: the mesh balances
connections, and busybox httpd closes each one anyway), about a thousand a second, so the
load generator's namespace gets what any such load generator needs: the whole ephemeral port
range and ``tcp_tw_reuse`` (without them, since the client keeps every connection in
TIME_WAIT and connect() uses half of the 28,000 default ports, it runs out after ~14,000
connections and throughput falls tenfold for every path: the drift seen round after round). The paths
run in short slices, interleaved (the order rotates each group), many times: drift and other
jobs' bursts hit all paths alike, and each path's ratio is taken against the direct slice of
its own group (median and range over the groups). The underlay bridge (a switch, in reality)
runs no netfilter. Before each slice it records TIME_WAIT
sockets in the client's and the task's namespaces and conntrack entries on h1 and h3, so
state that builds up over the run is visible in the results.

Then, with one connection, the p50 latency of each path (interleaved the same way): on an
idle machine the difference to ``direct`` is the time the mesh path adds to a request.

Then a second service with two replicas is probed every 10 ms through h3's published port
while one replica's container is killed: the time from the kill to the last failed request.

    python bench/mesh.py [--slices 12] [--slice-seconds 3] [--connections 8] [--kills 3] [--json FILE]

The load generator is wrk (Debian's ``wrk``), else bench/meshload.py's asyncio client. Needs
root (namespaces) and the images of scripts/build-test-images.sh.
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
#: What a load generator opening ~1,000 connections a second needs (its namespace only).
LOAD_GENERATOR_SYSCTLS = ("net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
#: The underlay bridge stands for a switch, which runs no netfilter: with br_netfilter loaded
#: (dockerd loads it) every frame it switches would go through the IP hooks of the underlay's
#: namespace, a host cost no real network has (and the path through a node without the task
#: crosses the underlay twice, the others once).
UNDERLAY_SYSCTLS = tuple(
    f"net.bridge.bridge-nf-call-{kind}=0" for kind in ("iptables", "ip6tables", "arptables")
)


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


def tune_underlay(swarm: multihost.Cluster) -> None:
    """The load generator's and the underlay's settings (both live in the hub namespace)."""
    for setting in LOAD_GENERATOR_SYSCTLS + UNDERLAY_SYSCTLS:
        multihost.run(*multihost.in_netns(swarm.hub), "sysctl", "-qw", setting)


def time_wait(netns_path: str) -> int:
    """TIME_WAIT sockets in a network namespace."""
    out = multihost.run("nsenter", f"--net={netns_path}", "ss", "-Htan", "state", "time-wait")
    return len(out.splitlines())


def conntrack_count(host: multihost.Host) -> int:
    return int(host.run("cat", "/proc/sys/net/netfilter/nf_conntrack_count", check=False).strip() or 0)


def cpu_jiffies() -> tuple[int, int]:
    """Machine-wide (busy, softirq) jiffies from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy, fields[6]


def measure_slice(
    swarm: multihost.Cluster, load: Any, url: str, connections: int, seconds: float, server_ns: str
) -> dict[str, Any]:
    """One slice of one path: the load generator's result, the state before it, the CPU it took."""
    h1, _, h3 = swarm.hosts
    state = {
        "client_time_wait": time_wait(multihost.netns_path(swarm.hub)),
        "server_time_wait": time_wait(server_ns),
        "conntrack_h1": conntrack_count(h1),
        "conntrack_h3": conntrack_count(h3),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    busy0, soft0 = cpu_jiffies()
    result: dict[str, Any] = load(swarm, url, connections, seconds)
    busy1, soft1 = cpu_jiffies()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    requests = max(1, result["requests"])
    result.update(state)
    result["cpu_ms_per_request"] = round((busy1 - busy0) * tick_ms / requests, 3)
    result["softirq_ms_per_request"] = round((soft1 - soft0) * tick_ms / requests, 3)
    return result


def interleaved(
    swarm: multihost.Cluster, load: Any, paths: dict[str, str], groups: int, seconds: float,
    connections: int, server_ns: str,
) -> list[dict[str, dict[str, Any]]]:  # fmt: skip
    """``groups`` groups of one slice per path, the order rotating from group to group."""
    names = list(paths)
    results = []
    for index in range(groups):
        order = names[index % len(names) :] + names[: index % len(names)]
        group = {}
        for name in order:
            group[name] = measure_slice(swarm, load, paths[name], connections, seconds, server_ns)
            print(index, name, json.dumps(group[name]), flush=True)
        results.append(group)
    return results


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


def load_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the interleaved measurement, shared with bench/mesh_swarm.py so that
    both measure alike."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--slices", type=int, default=12, help="interleaved groups (one slice per path each)")
    parser.add_argument("--slice-seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--latency-slices", type=int, default=3, help="groups with one connection")
    parser.add_argument(
        "--tool", choices=("wrk", "meshload"), default="wrk" if shutil.which("wrk") else "meshload"
    )
    parser.add_argument("--json", type=Path)
    return parser


def main() -> int:
    parser = load_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    load = wrk if args.tool == "wrk" else pyload

    swarm = multihost.Cluster(3, "docker")
    swarm.up()
    recoveries: list[dict[str, float]] = []
    try:
        swarm.start_shoal()
        h1, _, h3 = swarm.hosts
        m = swarm.manager
        m.ok("service", "create", "--detach", "--name", "search", "-p", "8080:8080",
             "--constraint", "node.hostname==h1", IMAGE)  # fmt: skip
        (task,) = running(swarm, "search", 1)
        container = task_container(h1, task["ID"])
        address = h1.engine_cli("inspect", "--format", "{{.NetworkSettings.IPAddress}}", container).strip()
        server_ns = (
            f"/proc/{h1.engine_cli('inspect', '--format', '{{.State.Pid}}', container).strip()}/ns/net"
        )
        # The direct path: the underlay routes h1's engine bridge through h1.
        h1.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        multihost.run("ip", "-n", swarm.hub, "route", "add", f"{address}/32", "via", h1.ip)
        tune_underlay(swarm)
        paths = {
            "direct": f"http://{address}:8080/",
            "mesh, node with the task": f"http://{h1.ip}:8080/",
            "mesh, node without it": f"http://{h3.ip}:8080/",
        }
        for url in paths.values():
            wait_until(lambda url=url: answers(swarm, url), 30, 0.3, f"{url} to answer")
        throughput = interleaved(
            swarm, load, paths, args.slices, args.slice_seconds, args.connections, server_ns
        )
        latency = interleaved(swarm, load, paths, args.latency_slices, args.slice_seconds, 1, server_ns)

        if args.kills:
            m.ok("service", "create", "--detach", "--name", "search2", "--replicas", "2", "-p", "8081:8080",
                 "--constraint", "node.hostname!=h3", IMAGE)  # fmt: skip
            running(swarm, "search2", 2)
            wait_until(lambda: answers(swarm, f"http://{h3.ip}:8081/"), 30, 0.3, "search2 through h3")
            recoveries = [time_to_recover(swarm, h3) for _ in range(args.kills)]
            print("recoveries", json.dumps(recoveries), flush=True)
    finally:
        swarm.down()

    summary = summarise(throughput, latency, recoveries, args)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"summary": summary, "throughput": throughput, "latency": latency, "recoveries": recoveries},
                indent=2,
            )
        )
    return 0


def summarise(
    throughput: list[dict[str, dict[str, Any]]],
    latency: list[dict[str, dict[str, Any]]],
    recoveries: list[dict[str, float]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    paths = {}
    for name in throughput[0]:
        runs = [group[name] for group in throughput]
        ratios = sorted(
            round(group[name]["rps"] / group["direct"]["rps"], 3)
            for group in throughput
            if group["direct"]["rps"]
        )
        paths[name] = {
            "rps_median": statistics.median(r["rps"] for r in runs),
            "rps_slices": [r["rps"] for r in runs],
            "vs_direct_median": statistics.median(ratios) if ratios else None,
            "vs_direct_range": [ratios[0], ratios[-1]] if ratios else None,
            "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
            "cpu_ms_per_request_median": statistics.median(r["cpu_ms_per_request"] for r in runs),
            "softirq_ms_per_request_median": statistics.median(r["softirq_ms_per_request"] for r in runs),
            "one_connection_p50_ms_median": statistics.median(group[name]["p50_ms"] for group in latency)
            if latency
            else None,
            "errors": sum(r["errors"] for r in runs),
        }
    loads = [group[name]["loadavg"] for group in throughput for name in group]
    return {
        "command": " ".join(["python", "bench/mesh.py", *sys.argv[1:]]),
        "tool": args.tool,
        "connections": args.connections,
        "slice_s": args.slice_seconds,
        "groups": len(throughput),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, kernel {platform.release()}",
        "loadavg_range": [min(loads), max(loads)],
        "paths": paths,
        "recover_s": [r["recover_s"] for r in recoveries],
        "recover_s_median": statistics.median(r["recover_s"] for r in recoveries) if recoveries else None,
        "failed_requests": [r["failed_requests"] for r in recoveries],
        "failed_at_join": [r["failed_at_join"] for r in recoveries],
    }


if __name__ == "__main__":
    sys.exit(main())
