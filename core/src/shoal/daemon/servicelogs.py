"""``service logs``: the output of every task of a service, read on whichever node runs it.

The manager asked reads its own tasks' output from its runtime and asks every other node for
its tasks' output over the transport (``rpc.TASK_LOGS``, mutual TLS; the node serves it to
manager certificates only, see ``tasklogs``). Without ``--follow`` the streams are merged in
time order (each task's lines are in order already, so a k-way merge holds one line per task);
with it, lines go out as they come, and tasks that start later are followed too. A node that
cannot be reached gives one warning item naming it, and the other nodes' logs still come.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from shoal import rpc
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import RuntimeError_, RuntimeProvider
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial, TransportProvider
from shoal.store.memory import Event, ObjectStore

#: One item of the local API's ``service.logs`` stream: a line (``Prefix``, ``Line``,
#: ``Stream``, ``Timestamp`` and the IDs and names the CLI builds its prefix from, see
#: ``LogReader.context``) or ``{"Warning": text}`` for a node whose logs are missing.
LogItem = dict[str, Any]

#: Tasks that have (or had) a container: their output is worth asking for.
FIRST_STATE_WITH_OUTPUT = pb.PREPARING


@dataclass
class LogReader:
    """What reading a service's logs needs from the daemon of the manager asked."""

    node_id: str
    runtime: RuntimeProvider
    transport: TransportProvider
    tls: Callable[[], TLSMaterial]
    store: ObjectStore
    #: Nodes already warned about in this call: one warning per node, not one per task.
    warned: set[str] = field(default_factory=set)

    def node_name(self, node_id: str) -> str:
        node = self.store.view.nodes.get(node_id)
        return node.description.hostname if node is not None and node.description.hostname else node_id[:12]

    def prefix(self, task: pb.Task) -> str:
        """docker's ``NAME.SLOT.TASKID@NODE`` (12-character task ID)."""
        slot = task.slot if task.slot else task.node_id
        return f"{task.service_annotations.name}.{slot}.{task.id[:12]}@{self.node_name(task.node_id)}"

    def context(self, task: pb.Task) -> LogItem:
        """What a line of ``task`` is printed with: docker's prefix and the IDs that
        ``--no-trunc``, ``--no-resolve`` and ``--details`` show instead or as well."""
        return {
            "Prefix": self.prefix(task),
            "ServiceName": task.service_annotations.name,
            "ServiceID": task.service_id,
            "Slot": str(task.slot) if task.slot else task.node_id,
            "TaskID": task.id,
            "NodeID": task.node_id,
            "NodeName": self.node_name(task.node_id),
        }

    def warning(self, node_id: str, reason: str) -> LogItem | None:
        if node_id in self.warned:
            return None
        self.warned.add(node_id)
        return {
            "Warning": f"incomplete log stream: node {self.node_name(node_id)} ({node_id}) is not available: {reason}"
        }

    async def task_lines(
        self, task: pb.Task, *, follow: bool, tail: int | None, since: float = 0.0
    ) -> AsyncIterator[LogItem]:
        """One task's output, from this node's runtime or from the node that runs it; lines
        older than ``since`` (seconds since the epoch, 0: none) are left out where they are read."""
        if task.node_id == self.node_id:
            source = self._local(task, follow=follow, tail=tail, since=since)
        else:
            source = self._remote(task, follow=follow, tail=tail, since=since)
        async for item in source:
            yield item

    async def _local(
        self, task: pb.Task, *, follow: bool, tail: int | None, since: float
    ) -> AsyncIterator[LogItem]:
        context = self.context(task)
        try:
            async for line in self.runtime.logs(task, follow=follow, tail=tail):
                if line.timestamp < since:
                    continue
                yield context | {
                    "Line": line.text,
                    "Stream": line.stream,
                    "Timestamp": line.timestamp,
                }
        except RuntimeError_ as exc:
            yield context | {
                "Line": f"error reading logs: {exc}",
                "Stream": "stderr",
                "Timestamp": 0.0,
            }

    async def _remote(
        self, task: pb.Task, *, follow: bool, tail: int | None, since: float
    ) -> AsyncIterator[LogItem]:
        node = self.store.view.nodes.get(task.node_id)
        addr = ""
        if node is not None:
            addr = node.description.addr or node.manager_status.addr
        problem = ""
        if node is None:
            problem = "it is no longer in the swarm"
        elif node.status.state == pb.NodeStatus.DOWN:
            problem = "the node is down"
        elif not addr:
            problem = "the node has not said where it serves task logs (it has no session yet, or runs an older shoal)"
        if problem:
            if (warning := self.warning(task.node_id, problem)) is not None:
                yield warning
            return
        context = self.context(task)
        request = rpb.TaskLogsRequest(
            task_id=task.id, follow=follow, tail=-1 if tail is None else tail, since=since
        )
        # The certificate must name the node that runs the task (every node certificate carries
        # its node ID), not just any node of the swarm: the output goes to that node alone.
        stream = self.transport.stream(
            addr, rpc.TASK_LOGS, request.SerializeToString(), tls=self.tls(), server_name=task.node_id
        )
        try:
            async for raw in stream:
                line = rpb.TaskLogLine.FromString(raw)
                if line.error:
                    text, kind = f"error reading logs: {line.error}", "stderr"
                else:
                    text, kind = line.text, line.stream or "stdout"
                yield context | {"Line": text, "Stream": kind, "Timestamp": line.timestamp}
        except RPCError as exc:
            if exc.code == StatusCode.NOT_FOUND:
                return  # the node no longer holds the task: its container went with it
            if (warning := self.warning(task.node_id, f"{addr}: {exc.message}")) is not None:
                yield warning
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


async def merge_in_time_order(sources: list[AsyncIterator[LogItem]]) -> AsyncIterator[LogItem]:
    """Each source in time order already: yield the earliest head of all, then refill it.
    Items without a timestamp (warnings, read errors) go out as soon as they are a head."""
    heap: list[tuple[float, int, LogItem]] = []

    async def refill(index: int) -> None:
        with contextlib.suppress(StopAsyncIteration):
            item = await anext(sources[index])
            heapq.heappush(heap, (float(item.get("Timestamp") or 0.0), index, item))

    try:
        await asyncio.gather(*(refill(i) for i in range(len(sources))))
        while heap:
            _, index, item = heapq.heappop(heap)
            yield item
            await refill(index)
    finally:
        for source in sources:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


async def follow_service(
    reader: LogReader, service_id: str, tasks: list[pb.Task], *, tail: int | None, since: float = 0.0
) -> AsyncIterator[LogItem]:
    """Lines as they come from every task, and from each task of the service that starts later."""
    queue: asyncio.Queue[LogItem] = asyncio.Queue(maxsize=1000)
    seen: set[str] = set()
    pumps: set[asyncio.Task[None]] = set()

    async def pump(task: pb.Task) -> None:
        async for item in reader.task_lines(task, follow=True, tail=tail, since=since):
            await queue.put(item)

    def start(task: pb.Task) -> None:
        seen.add(task.id)
        pumps.add(asyncio.create_task(pump(task), name=f"logs-{task.id}"))

    def started(event: Event) -> bool:
        task = event.obj
        return (
            event.kind == "task"
            and task.service_id == service_id
            and task.status.state >= pb.RUNNING
            and task.id not in seen
        )

    with reader.store.watch(["task"], where=started) as watch:

        async def new_tasks() -> None:
            while True:
                event = await watch.get()
                if event.obj.id not in seen:
                    start(event.obj)

        for task in tasks:
            start(task)
        watcher = asyncio.create_task(new_tasks(), name=f"logs-watch-{service_id}")
        try:
            while True:
                yield await queue.get()
        finally:
            for running in (watcher, *pumps):
                running.cancel()
            await asyncio.gather(watcher, *pumps, return_exceptions=True)


def service_log_items(
    reader: LogReader, service_id: str, *, follow: bool, tail: int | None, since: float = 0.0
) -> AsyncIterator[LogItem]:
    """The service's logs from every node: merged in time order, or followed."""
    tasks = [
        t for t in reader.store.view.service_tasks(service_id) if t.status.state >= FIRST_STATE_WITH_OUTPUT
    ]
    if follow:
        return follow_service(reader, service_id, tasks, tail=tail, since=since)
    return merge_in_time_order([reader.task_lines(t, follow=False, tail=tail, since=since) for t in tasks])
