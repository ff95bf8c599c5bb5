"""A whole swarm in one process: real daemons on the memory transport and the fake runtime.

Between unit tests of one module and real ``shoal daemon`` processes on a real engine there was
nothing: a test of orchestrator, updater, control API, dispatcher, agent or scheduler-driver
logic started processes and containers and took seconds to minutes. Here every node is the
daemon's own code (``shoal.daemon.node.Daemon``: the real store, CA, orchestrator, scheduler,
dispatcher and agent, with real certificates and the mutual-TLS checks of the memory
transport), built the way ``shoal daemon`` builds it, with ``--plugin transport=memory`` and
``--plugin runtime=fake``, so a cluster of several nodes starts in a fraction of a second and
follows whatever the daemon's construction becomes.

Use it from pytest (asyncio mode auto)::

    from shoal.testing.cluster import InProcessCluster

    async def test_scale(tmp_path):
        async with InProcessCluster(tmp_path, managers=1, workers=2) as cluster:
            await cluster.call("service.create", name="web", image="img", replicas=4)
            await cluster.wait_for_running("web", 4)

Calls take the local API's method names and parameters (what the CLI sends) and go through
the same handlers as the local API's; errors come back as ``APIError`` (``code``,
``message``). A node's fake runtime is ``cluster.runtime(node)``. Addresses are unique per
cluster (``c<N>-<node>:2377``) on the process-wide memory network
(``shoal_transport_memory.NETWORK``), which can partition nodes or take them down.

The only real-engine claims are made elsewhere: these clusters prove the logic above the
runtime, not that containers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal.daemon.localapi import APIError
from shoal.daemon.node import Daemon, DaemonConfig, map_error
from shoal.roles.transport import StatusCode

#: How long a harness wait gives up after (a loaded 2-core CI machine is slow).
DEADLINE = 20.0
#: Between two looks at a condition: the look itself (a control call) costs the cluster's loop.
POLL_INTERVAL = 0.05
_clusters = itertools.count(1)


@dataclass
class ClusterNode:
    """One node of the in-process cluster: its name, address and running daemon."""

    name: str
    addr: str
    config: DaemonConfig
    daemon: Daemon
    runner: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.daemon.state.node_id if self.daemon.state is not None else ""

    async def call(self, method: str, **params: Any) -> Any:
        """One local-API call on this node, as ``shoal`` would make it."""
        handler = self.daemon.api.unary.get(method)
        if handler is None:
            raise APIError(StatusCode.UNIMPLEMENTED, f"unknown method {method}")
        try:
            return await handler(params)
        except APIError:
            raise
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


class InProcessCluster:
    """``managers`` managers and ``workers`` workers, started on ``__aenter__``.

    ``runtime_options`` go to every node's fake runtime (``--plugin-opt runtime.KEY=VALUE``);
    ``plugins`` adds ``--plugin role=name`` choices (the runtime and transport are fixed);
    ``init_options`` are more ``swarm.init`` parameters.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        managers: int = 1,
        workers: int = 0,
        runtime_options: Mapping[str, str] | None = None,
        plugins: list[str] | None = None,
        plugin_options: Mapping[str, Mapping[str, str]] | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if managers < 1:
            raise ValueError("a cluster needs at least one manager")
        self.prefix = f"c{next(_clusters)}"
        # Unix socket paths are limited to ~100 bytes: keep them out of pytest's long tmp paths.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="shoal-"))
        self.base_dir = base_dir or self._socket_dir
        self.want_managers = managers
        self.want_workers = workers
        self.runtime_options = dict(runtime_options or {})
        self.plugins = list(plugins or [])
        self.plugin_options = {role: dict(opts) for role, opts in (plugin_options or {}).items()}
        #: Extra ``swarm.init`` parameters (what ``swarm init``'s flags send).
        self.init_options = dict(init_options or {})
        self.nodes: list[ClusterNode] = []

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> InProcessCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        first = await self.add_node("m1")
        await first.call("swarm.init", advertise_addr=first.addr, listen_addr=first.addr, **self.init_options)
        for index in range(2, self.want_managers + 1):
            await self.join(f"m{index}", role="manager")
        for index in range(1, self.want_workers + 1):
            await self.join(f"w{index}", role="worker")
        await self.wait_until(self._all_ready, "every node ready in node ls")

    async def stop(self) -> None:
        for node in reversed(self.nodes):
            await self._stop_node(node)
        self.nodes.clear()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _config(self, name: str) -> DaemonConfig:
        addr = f"{self.prefix}-{name}:2377"
        runtime = {"engine": f"{self.prefix}-{name}", "hostname": name, **self.runtime_options}
        options = {**self.plugin_options, "runtime": {**self.plugin_options.get("runtime", {}), **runtime}}
        return DaemonConfig(
            state_dir=self.base_dir / name,
            socket=self._socket_dir / f"{name}.sock",
            listen_addr=addr,
            advertise_addr=addr,
            hostname=name,
            plugins=["transport=memory", "runtime=fake", "network=fake", *self.plugins],
            plugin_options=options,
        )

    async def add_node(self, name: str) -> ClusterNode:
        """Start a daemon (not in a swarm yet, unless its state dir says so: a restart)."""
        config = self._config(name)
        daemon = Daemon(config)
        daemon.load_node_plugins()
        node = ClusterNode(name=name, addr=config.listen_addr, config=config, daemon=daemon)
        node.runner = asyncio.get_running_loop().create_task(daemon.run(), name=f"daemon-{name}")
        await self.wait_until(
            lambda: config.socket.exists() or node.runner is None or node.runner.done(), f"daemon {name} up"
        )
        if node.runner.done():
            node.runner.result()  # its error
        existing = [i for i, n in enumerate(self.nodes) if n.name == name]
        if existing:
            self.nodes[existing[0]] = node
        else:
            self.nodes.append(node)
        return node

    async def join(self, name: str, *, role: str = "worker", via: ClusterNode | None = None) -> ClusterNode:
        """A new node joining with the ``role`` token through ``via`` (the first manager)."""
        via = via or self.managers()[0]
        token = (await via.call("swarm.join_token", role=role, rotate=False))["Token"]
        node = await self.add_node(name)
        await node.call(
            "swarm.join", token=token, remote_addr=via.addr, listen_addr=node.addr, advertise_addr=node.addr
        )
        return node

    async def restart(self, node: ClusterNode) -> ClusterNode:
        """Stop a node's daemon and start it again from its state dir (containers stay in its
        fake engine, as they would on a real one)."""
        await self._stop_node(node)
        return await self.add_node(node.name)

    async def kill(self, node: ClusterNode) -> None:
        """Stop a node's daemon and leave it stopped (``restart`` brings it back)."""
        await self._stop_node(node)

    async def _stop_node(self, node: ClusterNode) -> None:
        runner, node.runner = node.runner, None
        if runner is None:
            return
        with contextlib.suppress(Exception):
            await node.daemon.shutdown()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    # ------------------------------------------------------------------ access

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def managers(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.runner is not None and n.daemon.manager is not None]

    def leader(self) -> ClusterNode | None:
        for node in self.managers():
            manager = node.daemon.manager
            if manager is not None and manager.is_leader():
                return node
        return None

    def runtime(self, node: ClusterNode) -> Any:
        """The node's fake runtime (``shoal_runtime_fake.FakeRuntime``)."""
        return node.daemon.runtime

    async def call(self, method: str, **params: Any) -> Any:
        """A local-API call on the leader (else the first manager up)."""
        node = self.leader() or self.managers()[0]
        return await node.call(method, **params)

    # ------------------------------------------------------------------ waiting

    async def wait_until(self, condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
        """Poll ``condition`` (sync or async) until it is truthy; ``AssertionError`` naming
        ``what`` (and the last value) at the deadline. Never a fixed sleep."""
        give_up = time.monotonic() + deadline
        last: Any = None
        while True:
            last = condition()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
            if time.monotonic() > give_up:
                raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what} (last: {last!r})")
            await asyncio.sleep(POLL_INTERVAL)

    async def _all_ready(self) -> bool:
        rows = await self.call("node.ls")
        ready = [row for row in _rows(rows) if row.get("Status") == "Ready"]
        return len(ready) == len(self.nodes)

    async def tasks(self, service: str) -> list[dict[str, Any]]:
        """``service ps SERVICE`` rows."""
        return list((await self.call("service.ps", services=[service]))["tasks"])

    async def wait_for_running(
        self, service: str, count: int, deadline: float = DEADLINE
    ) -> list[dict[str, Any]]:
        """Until exactly ``count`` of the service's tasks want to run and run."""

        async def running() -> list[dict[str, Any]] | None:
            rows = [
                t
                for t in await self.tasks(service)
                if t.get("DesiredState") == "Running" and t.get("State") == "Running"
            ]
            return rows if len(rows) == count else None

        rows: list[dict[str, Any]] = await self.wait_until(
            running, f"{count} running tasks of {service}", deadline
        )
        return rows


def _rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, dict):
        for key in ("nodes", "services", "tasks"):
            if key in result:
                return list(result[key])
    return list(result or [])
