"""Docker Swarm mode's routing mesh measured like bench/mesh.py measures shoal's (issue 14's anchor).

The same three hosts of tests/multihost.py (network namespaces, each with its own dockerd,
joined by an underlay bridge), but the dockerds form a Docker Swarm (``swarm init`` on h1,
h2 and h3 join) instead of running shoal, and keep their iptables rules (Swarm's ingress
publishes through them). One replica of the same image, ``-p 8080:8080``, constrained to h1;
then bench/mesh.py's interleaved slices on the same three paths:

- ``direct``: the task's address on h1's ``docker_gwbridge``, routed through h1 by the underlay;
- ``mesh, node with the task``: h1's address, port 8080 (ingress sandbox, IPVS, the task);
- ``mesh, node without it``: h3's address, port 8080 (IPVS on h3, VXLAN to h1's task).

Swarm's ingress load balancer is IPVS: on a kernel without it (``CONFIG_IP_VS`` not set, as on
the project's VM) ``service create`` succeeds but no published port answers; this script then
says so, with the engine's own error lines, and exits 2 instead of measuring nothing.

    python bench/mesh_swarm.py [--slices 12] [--slice-seconds 3] [--connections 8] [--json FILE]

Needs root, wrk (else bench/meshload.py) and the images of scripts/build-test-images.sh.
Everything it makes (swarm, dockerds, namespaces) is removed at the end, also after an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from pathlib import Path

import mesh  # bench/mesh.py: its path set-up also makes tests/multihost.py importable
import multihost
from harness import wait_until

SERVICE_LABEL = "com.docker.swarm.service.name"


class SwarmEngine(multihost.Engine):
    """A host's dockerd with its iptables rules: Swarm's ingress publishes ports through them."""

    def argv(self) -> list[str]:
        return [a for a in super().argv() if a not in ("--iptables=false", "--ip6tables=false")]


class SwarmHosts(multihost.Cluster):
    """multihost's hosts, each with a SwarmEngine."""

    def _host(self, index: int) -> multihost.Host:
        host = super()._host(index)
        host.engine = SwarmEngine(host.engine.kind, host.engine.base, host.engine.netns)
        return host


def form_swarm(hosts: SwarmHosts) -> None:
    manager, *workers = hosts.hosts
    manager.engine_cli("swarm", "init", "--advertise-addr", manager.ip)
    token = manager.engine_cli("swarm", "join-token", "-q", "worker").strip()
    for host in workers:
        host.engine_cli("swarm", "join", "--token", token, f"{manager.ip}:2377")


def leave_swarm(hosts: SwarmHosts) -> None:
    for host in reversed(hosts.hosts):
        with contextlib.suppress(Exception):  # the engine may be gone already
            host.engine_cli("swarm", "leave", "--force", check=False, timeout=30)


def task_container(host: multihost.Host, service: str) -> str:
    def found() -> str:
        ids = host.engine_cli("ps", "-q", "--filter", f"label={SERVICE_LABEL}={service}").split()
        return str(ids[0]) if ids else ""

    container: str = wait_until(found, 90, 0.2, f"a running task of {service} on {host.name}")
    return container


def gwbridge_address(container_pid: str) -> str:
    """The task's address outside the overlay networks (on docker_gwbridge): the direct path."""
    out = multihost.run("nsenter", f"--net=/proc/{container_pid}/ns/net", "ip", "-j", "-4", "addr")
    for link in json.loads(out):
        for entry in link.get("addr_info", []):
            address = ipaddress.ip_address(entry["local"])
            if not address.is_loopback and address not in ipaddress.ip_network("10.0.0.0/8"):
                return str(address)
    raise RuntimeError(f"the task has no docker_gwbridge address: {out}")


def ipvs_errors(host: multihost.Host) -> list[str]:
    log = host.engine.log_path.read_text(errors="replace").splitlines()
    return [line for line in log if "ipvs" in line.lower()][-3:]


def main() -> int:
    parser = mesh.load_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--answer-timeout", type=float, default=45.0, help="seconds for each path to answer")
    args = parser.parse_args()
    load = mesh.wrk if args.tool == "wrk" else mesh.pyload

    hosts = SwarmHosts(3, "docker")
    hosts.up()
    try:
        h1, _, h3 = hosts.hosts
        form_swarm(hosts)
        node_id = h1.engine_cli("info", "--format", "{{.Swarm.NodeID}}").strip()
        image_id = h1.engine_cli("image", "inspect", "--format", "{{.Id}}", mesh.IMAGE).strip()
        h1.engine_cli("service", "create", "--detach", "--no-resolve-image", "--name", "search",
                      "-p", "8080:8080", "--constraint", f"node.id=={node_id}", image_id)  # fmt: skip
        container = task_container(h1, "search")
        pid = h1.engine_cli("inspect", "--format", "{{.State.Pid}}", container).strip()
        address = gwbridge_address(pid)
        multihost.run("ip", "-n", hosts.hub, "route", "add", f"{address}/32", "via", h1.ip)
        mesh.tune_underlay(hosts)
        paths = {
            "direct": f"http://{address}:8080/",
            "mesh, node with the task": f"http://{h1.ip}:8080/",
            "mesh, node without it": f"http://{h3.ip}:8080/",
        }
        silent = []
        for name, url in paths.items():
            try:
                wait_until(lambda url=url: mesh.answers(hosts, url), args.answer_timeout, 0.5, url)
            except AssertionError:
                silent.append(name)
        if silent:
            print(f"Swarm's routing mesh does not answer here ({', '.join(silent)} silent after "
                  f"{args.answer_timeout:.0f} s). Its ingress load balancer is IPVS; IPVS in this kernel: "
                  f"{'yes' if Path('/proc/net/ip_vs').exists() else 'no (no /proc/net/ip_vs)'}. "
                  f"Load average {os.getloadavg()[0]:.1f}. Engine log: {ipvs_errors(h1) + ipvs_errors(h3)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        throughput = mesh.interleaved(
            hosts, load, paths, args.slices, args.slice_seconds, args.connections, f"/proc/{pid}/ns/net"
        )
        latency = mesh.interleaved(
            hosts, load, paths, args.latency_slices, args.slice_seconds, 1, f"/proc/{pid}/ns/net"
        )
    finally:
        leave_swarm(hosts)
        hosts.down()

    summary = mesh.summarise(throughput, latency, [], args)
    summary["command"] = " ".join(["python", "bench/mesh_swarm.py", *sys.argv[1:]])
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "throughput": throughput, "latency": latency}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
