"""Scheduler benchmark: place 10,000 and 100,000 tasks of one service on 1,000 nodes.

Same sizes as SwarmKit's published scheduler benchmark (1.8 s and 22.6 s). The timed part
is exactly what the kernel's scheduler driver does per tick: one ``await provider.schedule(
tasks, node_infos)`` with the whole pending set (the provider batches by service and spec
version). Building the node objects, tasks and ``NodeInfo``s is not timed: the driver keeps
those cached between ticks.

Nodes look like real ones: hostname, platform, 4 CPUs / 16 GiB, engine and node labels,
READY/ACTIVE, a few managers. Tasks carry a container spec, CPU and memory reservations and a
``node.platform.os==linux`` constraint, so the resource and constraint filters do real work.

    .venv/bin/python bench/bench_scheduler.py [--scheduler spread] [--runs 3] [--sizes 10000x1000,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from shoal.ids import new_id
from shoal.placement import build_node_infos
from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo, PluginContext, SchedulerProvider

GIB = 1024**3
MIB = 1024**2
SWARMKIT_SECONDS = {(10_000, 1_000): 1.8, (100_000, 1_000): 22.6}


def make_nodes(count: int) -> list[pb.Node]:
    """``count`` READY, ACTIVE nodes spread over three zones; the first three are managers."""
    nodes = []
    for index in range(count):
        node = pb.Node(id=new_id(), role=pb.NodeSpec.MANAGER if index < 3 else pb.NodeSpec.WORKER)
        node.spec.annotations.name = f"node-{index:04d}"
        node.spec.annotations.labels["zone"] = f"zone-{index % 3}"
        node.spec.availability = pb.NodeSpec.ACTIVE
        node.spec.membership = pb.NodeSpec.ACCEPTED
        node.description.hostname = f"node-{index:04d}"
        node.description.platform.os = "linux"
        node.description.platform.arch = "x86_64"
        node.description.resources.nano_cpus = 4 * 10**9
        node.description.resources.memory_bytes = 16 * GIB
        node.description.engine.engine_version = "20.10.24"
        node.description.engine.runtime = "docker"
        node.description.engine.labels["disk"] = "ssd"
        node.status.state = pb.NodeStatus.READY
        node.status.addr = f"10.0.{index // 250}.{index % 250 + 1}"
        nodes.append(node)
    return nodes


def make_tasks(count: int) -> list[pb.Task]:
    """``count`` PENDING tasks of one service at spec version 1."""
    service_id = new_id()
    spec = pb.TaskSpec()
    spec.container.image = "searchsvc:v1.0"
    spec.container.args.extend(["--port", "8080"])
    spec.container.env.append("MODE=production")
    spec.resources.reservations.nano_cpus = 10_000_000  # 0.01 CPU
    spec.resources.reservations.memory_bytes = 32 * MIB
    spec.placement.constraints.append("node.platform.os==linux")
    tasks = []
    for slot in range(1, count + 1):
        task = pb.Task(id=new_id(), service_id=service_id, spec_version=1, slot=slot)
        task.spec.CopyFrom(spec)
        task.desired_state = pb.RUNNING
        task.status.state = pb.PENDING
        task.service_annotations.name = "search"
        tasks.append(task)
    return tasks


def load_provider(name: str) -> SchedulerProvider:
    """Build the scheduler the way the kernel would: its entry point's factory hook."""
    (entry,) = [ep for ep in entry_points(group="shoal.scheduler") if ep.name == name]
    module = entry.load()
    context = PluginContext(role="scheduler", name=name, state_dir=Path("."))
    provider: SchedulerProvider = module.shoal_scheduler_provider(context=context)
    return provider


async def time_once(provider: SchedulerProvider, tasks: Sequence[pb.Task], nodes: Sequence[pb.Node]) -> float:
    infos: list[NodeInfo] = list(build_node_infos(nodes, []).values())
    start = time.perf_counter()
    placements = await provider.schedule(tasks, infos)
    elapsed = time.perf_counter() - start
    unplaced = sum(1 for placement in placements if not placement.node_id)
    if len(placements) != len(tasks) or unplaced:
        raise SystemExit(
            f"bad result: {len(placements)} placements for {len(tasks)} tasks, {unplaced} unplaced"
        )
    return elapsed


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def main(args: Any) -> None:
    provider = load_provider(args.scheduler)
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()}")
    print(f"scheduler: {args.scheduler} ({type(provider).__module__}.{type(provider).__name__})")
    for size in args.sizes.split(","):
        task_count, node_count = (int(part) for part in size.split("x"))
        nodes = make_nodes(node_count)
        tasks = make_tasks(task_count)
        times = [await time_once(provider, tasks, nodes) for _ in range(args.runs)]
        reference = SWARMKIT_SECONDS.get((task_count, node_count))
        ref = f"  (SwarmKit: {reference} s)" if reference else ""
        print(
            f"{task_count:>7} tasks on {node_count} nodes: best {min(times):.3f} s, "
            f"median {statistics.median(times):.3f} s over {args.runs} runs{ref}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scheduler", default="spread", help="scheduler entry point name (default spread)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="10000x1000,100000x1000", help="TASKSxNODES,... ")
    asyncio.run(main(parser.parse_args()))
