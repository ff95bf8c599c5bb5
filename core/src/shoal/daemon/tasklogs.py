"""The node side of ``service logs``: serving this node's tasks' output to managers.

Every node serves ``rpc.TASK_LOGS`` (rule ``MANAGER``) behind ``rpc.guard``: a manager checks the
caller against its store (a current manager), a worker, which holds no store, against the
certificate and the managers its leader last named (``rpc.certificate_checker``). Only tasks the
node's agent holds are served, so a caller cannot name another container of the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from shoal import rpc
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import RuntimeError_, RuntimeProvider
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode


class TaskLogServer:
    """Streams the output of one of this node's tasks to the manager that asks."""

    def __init__(
        self,
        node_id: str,
        task: Callable[[str], pb.Task | None],
        runtime: Callable[[], RuntimeProvider | None],
    ) -> None:
        self.node_id = node_id
        #: This node's task by ID, from its agent (None: not on this node, or no agent yet).
        self.task = task
        self.runtime = runtime

    async def task_logs(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        rpc.caller(peer)  # authorised by rpc.guard (Access.MANAGER)
        req = rpb.TaskLogsRequest.FromString(request)
        task = self.task(req.task_id)
        runtime = self.runtime()
        if task is None or runtime is None:
            raise RPCError(StatusCode.NOT_FOUND, f"task {req.task_id} is not on node {self.node_id}")
        tail = None if req.tail < 0 else req.tail
        try:
            async for line in runtime.logs(task, follow=req.follow, tail=tail):
                if line.timestamp < req.since:  # --since: older lines never leave the node
                    continue
                yield rpb.TaskLogLine(
                    text=line.text, stream=line.stream, timestamp=line.timestamp
                ).SerializeToString()
        except RuntimeError_ as exc:
            yield rpb.TaskLogLine(error=str(exc)).SerializeToString()

    def handlers(self, check: rpc.Check) -> tuple[rpc.UnaryTable, rpc.StreamTable]:
        """The guarded handler table to serve (merge with a manager's own)."""
        return rpc.guard({}, {rpc.TASK_LOGS: self.task_logs}, check)
