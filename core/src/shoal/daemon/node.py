"""``shoal daemon``: one node of a swarm (like dockerd with swarm mode).

At start it loads its per-node plugins (runtime, transport) — a plugin error stops it before
anything runs — and, if the state dir says it is in a swarm, rejoins: a manager reopens its
store, then every node serves the transport and starts its agent. ``swarm init`` arrives over
the local API and makes a one-node swarm: cluster ID, root CA (through the CA provider, key
kept in the store), the node's own certificate, the store, the control loops and the agent,
which talks to the dispatcher over mutual TLS even on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from shoal import externalca, filemodes, identity, rpc, statekeys, tokens
from shoal.agent.agent import Agent, description_from
from shoal.agent.enginegate import engine_call_limit
from shoal.daemon.clusterinfo import cluster_summary
from shoal.daemon.localapi import APIError, LocalAPIServer, RemoteListener
from shoal.daemon.manager import Manager
from shoal.daemon.network import NodeNetworkLife
from shoal.daemon.renewal import CertificateRenewer, check_not_expired
from shoal.daemon.servicelogs import LogReader, service_log_items
from shoal.daemon.state import CERTS_DIR, STATE_FILE, NodeState, load_state, save_state
from shoal.daemon.tasklogs import TaskLogServer
from shoal.defaults import NODE_CERT_EXPIRY, cluster_spec
from shoal.ids import new_id
from shoal.loader import PluginError, PluginLoader, declared_plugins, parse_plugin_args, resolve_selection
from shoal.logtime import since_param
from shoal.manager import clustersettings, netobjects
from shoal.manager.controlapi import ControlError, external_ca_fields
from shoal.manager.events import parse_query
from shoal.manager.methods import CONTROL_METHODS
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.base import CLUSTER_ROLES, NODE_ROLES
from shoal.roles.network import NodeNetwork
from shoal.roles.runtime import RuntimeError_, RuntimeProvider
from shoal.roles.secrets import SecretsProvider
from shoal.roles.store import StoreOpenError, StoreUnavailable
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial, TransportProvider, TransportServer
from shoal.specs import SpecError, parse_availability, parse_tail, strings
from shoal.store.memory import ReadView, Tx

log = logging.getLogger("shoal.daemon")

#: The roles a manager builds providers for: the store and CA at start, the scheduler each
#: time it becomes leader. All are checked (built once) before a manager starts.
MANAGER_PLUGIN_ROLES = ("store", "ca", "scheduler", "secrets", "network")
#: Cluster-wide roles every node runs, workers included (their data paths must match).
EVERY_NODE_CLUSTER_ROLES = ("network",)

DEFAULT_PORT = 2377
NOT_IN_SWARM = (
    'This node is not a swarm manager. Use "shoal swarm init" or "shoal swarm join" to connect this node '
    "to swarm and try again."
)


@dataclass
class DaemonConfig:
    state_dir: Path
    socket: Path
    listen_addr: str = f"0.0.0.0:{DEFAULT_PORT}"
    advertise_addr: str = ""
    hostname: str = ""
    plugins: list[str] = field(default_factory=list)  # raw --plugin values
    plugin_options: dict[str, dict[str, str]] = field(default_factory=dict)
    config_plugins: dict[str, Any] = field(default_factory=dict)
    #: Engine operations the agent runs at once (``--max-concurrent-engine-calls``); ``None``:
    #: what the runtime plugin declares, else the kernel's default (``engine_call_limit``).
    max_engine_calls: int | None = None
    #: ``--control-listen``: also serve the control API on TCP with mutual TLS.
    control_listener: RemoteListener | None = None
    #: ``--node-generic-resource``: what this node offers to ``--generic-resource`` reservations.
    generic_resources: list[pb.GenericResource] = field(default_factory=list)


def map_error(exc: BaseException) -> APIError | None:
    """Known failures become one-line API errors; anything else is a bug (logged, generic)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ControlError):
        return APIError(exc.code, exc.message)
    if isinstance(exc, (PluginError, SpecError, tokens.TokenError)):
        return APIError(StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, StoreUnavailable):
        return APIError(StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, StoreOpenError):
        return APIError(StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, RPCError):
        return APIError(exc.code, exc.message)
    if isinstance(exc, RuntimeError_):
        return APIError(StatusCode.UNAVAILABLE, str(exc))
    return None


def split_addr(addr: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host[:port]`` -> (host, port); a clear error for anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    if not host:
        raise SpecError(f'invalid address "{addr}": use HOST:PORT')
    try:
        number = int(port)
    except ValueError:
        raise SpecError(f'invalid address "{addr}": the port must be a number') from None
    if not 0 <= number < 65536:
        raise SpecError(f'invalid address "{addr}": the port must be between 0 and 65535')
    return host.strip("[]"), number


def _root_from(raw: bytes) -> bytes:
    """The root CA certificate in a GetRootCA answer; empty if the answer is not one."""
    try:
        return rpb.GetRootCAResponse.FromString(raw).certificate
    except DecodeError:
        return b""


def guess_advertise_host() -> str:
    """The address other nodes can reach, when the listen address is a wildcard."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks a route
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Daemon:
    """One node: local API, per-node plugins, and (once in a swarm) manager and agent."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.selection = resolve_selection(config.plugins or None, config=config.config_plugins or None)
        self.loader = PluginLoader(self.selection, config.plugin_options)
        self.runtime: RuntimeProvider | None = None
        self.transport: TransportProvider | None = None
        self.state: NodeState | None = None
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.server: TransportServer | None = None
        self.tls: TLSMaterial | None = None
        self.renewer: CertificateRenewer | None = None
        #: The swarm's network plugin on this node (``daemon/network.py``).
        self.network = NodeNetworkLife()
        #: A certificate issued out of band by an external CA, used by the first manager to
        #: authenticate to that CA before it has a certificate of its own (swarm init only).
        self._bootstrap_tls: TLSMaterial | None = None
        self.api = LocalAPIServer(config.socket, map_error)
        self.api.remote = config.control_listener
        self._stop = asyncio.Event()
        self._swarm_lock = asyncio.Lock()
        self._role_change: asyncio.Task[None] | None = None
        #: A plugin failure after start (see ``_plugin_failed``): ``run`` raises it.
        self._plugin_failure: PluginError | None = None
        #: A manager's keys at rest (``shoal.statekeys``); with autolock, ``locked`` until
        #: ``swarm unlock``: the node then serves nothing (no store, no dispatcher, no CA).
        self.keyring = statekeys.ManagerKeyring(self.state_dir, self.state_dir / CERTS_DIR)
        self.locked = False

    # ------------------------------------------------------------------ lifecycle

    def _context(self, role: str, loader: PluginLoader | None = None) -> Any:
        loader = loader or self.loader
        name = loader.selection[role]
        directory = self.state_dir / "plugins" / f"{role}-{name}"
        directory.mkdir(parents=True, exist_ok=True)
        node_id = self.state.node_id if self.state else ""
        context = loader.make_context(
            role, directory, node_id=node_id, logger=logging.getLogger(f"shoal.{role}")
        )
        context.node_tls = lambda: self.tls or self._bootstrap_tls
        # A store that replicates itself reaches the other managers through these.
        context.transport = self.transport
        context.advertise_addr = self.state.advertise_addr if self.state else ""
        return context

    def load_node_plugins(self) -> None:
        """Per-node roles; raises PluginError (exit 2) before anything starts."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = load_state(self.state_dir)
        if self.state is not None:
            explicit = dict(p.split("=", 1) for p in self.config.plugins if "=" in p)
            for role in CLUSTER_ROLES:
                fixed = self.state.plugins.get(role)
                if role in explicit and fixed and explicit[role] != fixed:
                    raise PluginError(
                        f"the {role} plugin of this swarm was fixed at swarm init ({fixed}); "
                        f"remove --plugin {role}={explicit[role]}"
                    )
            merged = {**self.selection, **self.state.plugins}
            self.loader = PluginLoader(merged, self.config.plugin_options)
            self.selection = merged
        self.loader.load_extensions()
        self.runtime = self.loader.provider("runtime", self._context("runtime"))
        self.transport = self.loader.provider("transport", self._context("transport"))
        if self.state is not None and self.state.is_manager:
            self._check_manager_plugins(self.loader)
        elif self.state is not None:
            for role in EVERY_NODE_CLUSTER_ROLES:
                self.loader.check(role)

    def _check_manager_plugins(self, loader: PluginLoader) -> None:
        """Build every provider a manager needs once and drop it (``PluginLoader.check``), so a
        broken store, CA or scheduler plugin stops ``swarm init``, a join as manager or the
        daemon's start with one ``PluginError`` line, before anything is created, instead of
        a manager that leads and never schedules."""
        loader.load_extensions()
        for role in MANAGER_PLUGIN_ROLES:
            loader.check(role)

    def _plugin_failed(self, error: PluginError) -> None:
        """A plugin failed after start (a scheduler built on becoming leader): stop; ``run``
        raises the error, so the daemon exits 2 with its one line."""
        self._plugin_failure = self._plugin_failure or error
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._register_api()
        if self.state is not None and self._stays_locked(self.state):
            log.warning("this manager's keys are locked (autolock): run `shoal swarm unlock` to start it")
        elif self.state is not None:
            await self._start_swarm(self.state, bootstrap=False)
        await self.api.start()
        log.info("shoal daemon ready on unix://%s", self.config.socket)
        print(f"shoal daemon ready on unix://{self.config.socket}", flush=True)
        await self._stop.wait()
        log.info("shutting down")
        await self.shutdown()
        if self._plugin_failure is not None:
            raise self._plugin_failure

    async def shutdown(self) -> None:
        await self.api.stop()
        await self._stop_swarm()
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                await self.runtime.close()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()

    async def _stop_swarm(self) -> None:
        if self.renewer is not None:
            await self.renewer.stop()
            self.renewer = None
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
        if self.server is not None:
            await self.server.stop(0.5)
            self.server = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None
        await self.network.close()

    # ------------------------------------------------------------------ swarm membership

    def _tls(self) -> TLSMaterial:
        assert self.tls is not None
        return self.tls

    async def _start_swarm(
        self,
        state: NodeState,
        *,
        bootstrap: bool,
        init: Any = None,
        join_via: str = "",
        force_new_cluster: bool = False,
    ) -> None:
        """Start this node's part of the swarm. A manager opens its store replica first;
        ``join_via`` (a manager address) makes it a new, empty replica that the leader adds
        once this node serves the store RPCs."""
        assert self.transport is not None and self.runtime is not None
        store_context = self._context("store") if state.is_manager else None
        if store_context is not None:  # before the node key is read: it is sealed by these keys
            store_context.sealer = self.keyring.open(fresh=bool(join_via))
            store_context.authorize_peer = self._store_peer_check(state.cluster_id)
        creds = identity.load_credentials(self.state_dir / CERTS_DIR)
        check_not_expired(creds, state.is_manager)
        self.tls = TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        unary: dict[str, Any] = {}
        streams: dict[str, Any] = {}
        if state.is_manager:
            loader = self.loader
            self.manager = Manager(
                node_id=state.node_id,
                cluster_id=state.cluster_id,
                advertise_addr=state.advertise_addr,
                store_provider=loader.provider("store", store_context or self._context("store")),
                ca=loader.provider("ca", self._context("ca")),
                scheduler_factory=lambda: loader.provider("scheduler", self._context("scheduler")),
                transport=self.transport,
                tls=self._tls,
                state_dir=self.state_dir,
                node_filters=lambda: [f for fs in loader.hook.shoal_node_filters() for f in fs],
                task_state_changed=loader.hook.shoal_task_state_changed,
                on_plugin_failure=self._plugin_failed,
                secrets=self._secrets_provider,
                keyring=self.keyring,
            )
            await self.manager.start(
                bootstrap=bootstrap, join=bool(join_via), force_new_cluster=force_new_cluster, init=init
            )
            if not join_via:
                await self._reissue_if_expired(state)
            unary, streams = self.manager.rpc_handlers()
        streams.update(self._task_log_handlers(state))
        serve_addr = state.advertise_addr
        if state.is_manager:
            self.server = await self.transport.serve(state.listen_addr, self.tls, unary, streams)
            if join_via and self.manager is not None:
                others = [m for m in state.managers if m != join_via and m != state.advertise_addr]
                await self.manager.join_group(join_via, others)
        else:
            # A worker serves managers one thing, its tasks' logs; agents still dial managers.
            try:
                self.server = await self.transport.serve(state.listen_addr, self.tls, unary, streams)
            except Exception as exc:  # the node still runs tasks; only its logs are out of reach
                log.warning(
                    "cannot serve task logs on %s (service logs will miss this node): %s",
                    state.listen_addr,
                    exc,
                )
                serve_addr = ""
        # Before the agent: a task's endpoint needs the node's network ready.
        advertise_ip = split_addr(state.advertise_addr)[0]
        await self.network.start(
            self.loader, self._context("network"), NodeNetwork(state.node_id, advertise_ip)
        )
        self.agent = Agent(
            node_id=state.node_id,
            state_dir=self.state_dir,
            runtime=self.runtime,
            runtime_name=self.selection["runtime"],
            transport=self.transport,
            tls=self._tls,
            managers=state.managers,
            hostname=self.config.hostname,
            on_node=self._on_node,
            on_managers=self._managers_learned,
            max_engine_calls=engine_call_limit(type(self.runtime), self.config.max_engine_calls),
            serve_addr=serve_addr,
            network=self.network.provider,
            generic_resources=self.config.generic_resources,
        )
        await self.agent.start()
        self.renewer = CertificateRenewer(
            state_dir=self.state_dir / CERTS_DIR,
            transport=self.transport,
            current=self._tls,
            on_renewed=self._renewed,
            managers=lambda: self.agent.managers if self.agent is not None else state.managers,
        )
        self.renewer.start()

    def _store_peer_check(self, cluster_id: str) -> rpc.Check:
        """The check the kernel makes of a store-peer call, for a store that carries messages
        outside the transport (``PluginContext.authorize_peer``): the same rule against this
        manager's current view, so a demoted or removed manager is refused there too."""

        def view() -> ReadView:
            manager = self.manager
            if manager is None:
                raise RPCError(StatusCode.UNAVAILABLE, "this manager is not serving yet")
            return manager.store.view

        return rpc.checker(cluster_id, view)

    def _task_log_handlers(self, state: NodeState) -> rpc.StreamTable:
        """``rpc.TASK_LOGS`` for this node's tasks, guarded by the store on a manager and by the
        certificate alone on a worker (which has no store)."""
        manager = self.manager
        check = (
            rpc.checker(state.cluster_id, lambda: manager.store.view)
            if manager is not None
            else rpc.certificate_checker(
                state.cluster_id, lambda: self.agent.manager_ids if self.agent is not None else None
            )
        )

        def task(task_id: str) -> pb.Task | None:
            controller = self.agent.controllers.get(task_id) if self.agent is not None else None
            return controller.task if controller is not None else None

        server = TaskLogServer(state.node_id, task, lambda: self.runtime)
        return server.handlers(check)[1]

    def _secrets_provider(self, driver: str) -> SecretsProvider:
        """The secrets plugin named ``driver`` (a secret's ``--driver``, or the swarm's own)."""
        loader = PluginLoader({**self.loader.selection, "secrets": driver}, self.config.plugin_options)
        loader.load_extensions()
        return loader.provider("secrets", self._context("secrets", loader))

    async def swarm_init(self, params: dict[str, Any]) -> Any:
        async with self._swarm_lock:
            if self.locked:
                raise self._not_serving()
            if params.get("force_new_cluster"):
                return await self._force_new_cluster(params)
            if self.state is not None:
                raise APIError(
                    StatusCode.FAILED_PRECONDITION,
                    'This node is already part of a swarm. Use "shoal swarm leave" to leave this swarm '
                    "and join another one.",
                )
            return await self._init(params)

    async def _init(self, params: dict[str, Any]) -> Any:
        assert self.runtime is not None
        requested = parse_plugin_args(strings(params, "plugins", "--plugin"))
        external_cas = externalca.from_request(external_ca_fields(params.get("external_cas") or []))
        if external_cas:  # the CA plugin whose provider class declares the protocols given
            requested["ca"] = externalca.choose_ca_plugin(
                external_cas, declared_plugins("ca"), requested.get("ca")
            )
        bootstrap = (params.get("bootstrap_cert") or "", params.get("bootstrap_key") or "")
        for role, name in requested.items():
            if role in NODE_ROLES:
                raise PluginError(
                    f"the {role} plugin is chosen per daemon, not per swarm: start the daemon with "
                    f"--plugin {role}={name}"
                )
        selection = {**self.selection, **requested}
        loader = PluginLoader(selection, self.config.plugin_options)
        self._check_manager_plugins(loader)  # PluginError here: nothing has been created yet

        listen = str(params.get("listen_addr") or self.config.listen_addr)
        listen_host, listen_port = split_addr(listen)
        advertise = str(params.get("advertise_addr") or self.config.advertise_addr or "")
        if advertise:
            adv_host, adv_port = split_addr(advertise, listen_port)
        else:
            adv_host = listen_host if listen_host not in ("0.0.0.0", "::", "") else guess_advertise_host()
            adv_port = listen_port
        availability = parse_availability(params.get("availability"))
        pools, subnet_size = netobjects.address_pools(params)
        cluster = pb.Cluster(spec=cluster_spec())
        for change in clustersettings.changes(params):  # a bad value: nothing created yet
            change(cluster)
        try:
            info = await self.runtime.describe()
        except RuntimeError_ as exc:
            raise APIError(
                StatusCode.UNAVAILABLE, f"cannot initialise: the container engine: {exc}"
            ) from None

        self.loader = loader
        self.selection = selection
        cluster_id = new_id()
        node_id = new_id()
        state = NodeState(
            node_id=node_id,
            cluster_id=cluster_id,
            role="manager",
            listen_addr=f"{listen_host}:{listen_port}",
            advertise_addr=f"{adv_host}:{adv_port}",
            managers=[f"{adv_host}:{adv_port}"],
            plugins={role: selection[role] for role in CLUSTER_ROLES},
        )
        self.state = state
        try:
            ca = loader.provider("ca", self._context("ca"))
            await ca.configure(external_cas)
            if all(bootstrap):
                cacerts = b"".join(c.cacert_pem for c in external_cas)
                self._bootstrap_tls = TLSMaterial(
                    root_pem=cacerts, cert_pem=str(bootstrap[0]).encode(), key_pem=str(bootstrap[1]).encode()
                )
            try:
                root = await ca.create_root()
            except Exception as exc:  # the plugin's fault, not the request's: name the plugin
                raise loader.failure("ca", "create_root", exc) from exc
            await ca.load_root(root)
            key_pem = identity.generate_key()
            csr = identity.build_csr(key_pem, node_id)
            issued = await ca.sign(
                csr,
                node_id=node_id,
                role=rpc.MANAGER_OU,
                cluster_id=cluster_id,
                expiry_seconds=cluster.spec.ca_config.node_cert_expiry,
            )
            identity.write_credentials(
                self.state_dir / CERTS_DIR,
                identity.NodeCredentials(
                    key_pem=key_pem, cert_pem=issued.presented_pem, root_pem=root.cert_pem
                ),
            )
            cluster.id = cluster_id
            cluster.spec.ca_config.external_cas.extend(externalca.to_spec(external_cas))
            cluster.root_ca.ca_cert = root.cert_pem
            cluster.root_ca.ca_key = root.key_pem
            cluster.root_ca.ca_cert_hash = tokens.root_digest(root.cert_pem)
            cluster.root_ca.join_tokens.worker = tokens.new_token(root.cert_pem)
            cluster.root_ca.join_tokens.manager = tokens.new_token(root.cert_pem)
            cluster.plugins.CopyFrom(pb.PluginSelection(**{r: selection[r] for r in CLUSTER_ROLES}))
            cluster.default_address_pool.extend(pools)
            cluster.subnet_size = subnet_size
            node = pb.Node(id=node_id, role=pb.NodeSpec.MANAGER)
            node.spec.desired_role = pb.NodeSpec.MANAGER
            node.spec.membership = pb.NodeSpec.ACCEPTED
            node.spec.availability = availability
            node.description.CopyFrom(
                description_from(
                    info, self.config.hostname, selection["runtime"], generic=self.config.generic_resources
                )
            )
            node.status.state = pb.NodeStatus.UNKNOWN
            node.status.addr = adv_host
            node.manager_status.addr = state.advertise_addr
            node.manager_status.reachability = pb.ManagerStatus.REACHABLE
            node.certificate.role = pb.NodeSpec.MANAGER
            node.certificate.state = pb.Certificate.ISSUED
            node.certificate.cn = node_id
            node.certificate.certificate = issued.presented_pem

            unlock_key = self._init_keys(cluster, bool(params.get("autolock")))

            def init(tx: Tx) -> None:
                tx.create(cluster)
                tx.create(node)
                tx.create(netobjects.ingress_network(cluster.default_address_pool, cluster.subnet_size))

            await self._start_swarm(state, bootstrap=True, init=init)
            save_state(self.state_dir, state)
        except BaseException:
            await self._stop_swarm()
            self.state = None
            self.keyring.release()
            for leftover in (
                self.state_dir / CERTS_DIR,
                self.state_dir / "plugins",
                self.state_dir / "worker",
            ):
                shutil.rmtree(leftover, ignore_errors=True)
            raise
        return {
            "NodeID": node_id,
            "ClusterID": cluster_id,
            "AdvertiseAddr": state.advertise_addr,
            "UnlockKey": statekeys.format_unlock_key(unlock_key) if unlock_key else "",
        }

    async def _force_new_cluster(self, params: dict[str, Any]) -> Any:
        """``swarm init --force-new-cluster``: restart this manager as the only one, from its
        own copy of the state (services, tasks, secrets and nodes are kept)."""
        state = self.state
        if state is None or not state.is_manager:
            raise APIError(
                StatusCode.FAILED_PRECONDITION,
                "--force-new-cluster recovers a swarm from one of its managers: this node is not a "
                "manager of a swarm (use swarm init without it to create a new swarm)",
            )
        advertise = str(params.get("advertise_addr") or "")
        if advertise:
            host, port = split_addr(advertise, split_addr(state.listen_addr)[1])
            state.advertise_addr = f"{host}:{port}"
        listen = str(params.get("listen_addr") or "")
        if listen:
            host, port = split_addr(listen)
            state.listen_addr = f"{host}:{port}"
        await self._stop_swarm()
        state.managers = [state.advertise_addr]
        await self._start_swarm(state, bootstrap=False, force_new_cluster=True)
        save_state(self.state_dir, state)
        log.warning("this manager now leads a new one-manager swarm (--force-new-cluster)")
        return {"NodeID": state.node_id, "ClusterID": state.cluster_id, "AdvertiseAddr": state.advertise_addr}

    def _adopt_swarm_plugins(self, chosen: pb.PluginSelection) -> dict[str, str]:
        """A node becoming a manager runs the swarm's store, scheduler and CA: load them now
        (PluginError if this daemon lacks one) and return the swarm's selection."""
        plugins = {role: getattr(chosen, role) or self.selection[role] for role in CLUSTER_ROLES}
        merged = {**self.selection, **plugins}
        loader = PluginLoader(merged, self.config.plugin_options)
        self._check_manager_plugins(loader)
        self.loader, self.selection = loader, merged
        return plugins

    def _adopt_node_plugins(self, chosen: pb.PluginSelection) -> dict[str, str]:
        """A worker joining runs the swarm's network plugin too: check it now (PluginError,
        nothing written, if this daemon lacks it) and return it for ``state.json``."""
        plugins = {role: getattr(chosen, role) or self.selection[role] for role in EVERY_NODE_CLUSTER_ROLES}
        loader = PluginLoader({**self.selection, **plugins}, self.config.plugin_options)
        for role in EVERY_NODE_CLUSTER_ROLES:
            loader.check(role)
        self.loader = loader
        self.selection = {**self.selection, **plugins}
        return plugins

    async def _reissue_if_expired(self, state: NodeState) -> None:
        """A manager whose certificate ran out while it was off signs itself a new one: it
        holds the CA, and nobody else could vouch for it."""
        assert self.manager is not None and self.tls is not None
        if identity.cert_not_after(self.tls.cert_pem) > dt.datetime.now(dt.UTC):
            return
        cluster = self.manager.store.view.cluster()
        expiry = cluster.spec.ca_config.node_cert_expiry if cluster is not None else NODE_CERT_EXPIRY
        key_pem = identity.generate_key()
        issued = await self.manager.ca.sign(
            identity.build_csr(key_pem),
            node_id=state.node_id,
            role=rpc.MANAGER_OU,
            cluster_id=state.cluster_id,
            expiry_seconds=expiry,
        )
        creds = identity.NodeCredentials(
            key_pem=key_pem, cert_pem=issued.presented_pem, root_pem=self.tls.root_pem
        )
        identity.write_credentials(self.state_dir / CERTS_DIR, creds)
        self.tls = TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        log.warning("this manager's certificate had expired; it issued itself a new one")

    def _managers_learned(self, managers: list[str]) -> None:
        """The agent's session listed the managers (leader first): keep them in state.json, so
        a restart while the manager this node joined through is down finds the others."""
        state = self.state
        if state is None or state.managers == managers:
            return
        state.managers = list(managers)
        if not (self.state_dir / STATE_FILE).exists():
            return  # init or join is still under way: it saves the state (this list included)
        try:
            save_state(self.state_dir, state)
        except OSError as exc:
            log.warning("could not record the managers' addresses in %s: %s", self.state_dir, exc)

    def _renewed(self, tls: TLSMaterial) -> None:
        """A renewed certificate: new connections (client and server side) use it from now on."""
        self.tls = tls
        if self.server is not None:
            self.server.update_tls(tls)

    # ------------------------------------------------------------------ promotion and demotion

    def _on_node(self, node: pb.Node) -> None:
        """The managers sent this node's object: act on a promotion or demotion."""
        state = self.state
        if state is None or (self._role_change is not None and not self._role_change.done()):
            return
        promoted = not state.is_manager and node.spec.desired_role == pb.NodeSpec.MANAGER
        demoted = state.is_manager and node.role == pb.NodeSpec.WORKER
        if promoted or demoted:
            self._role_change = asyncio.get_running_loop().create_task(
                self._change_role(to_manager=promoted), name="role-change"
            )

    async def _change_role(self, *, to_manager: bool) -> None:
        """Get a certificate for the new role, then restart this node's part of the swarm in
        it: a new manager joins the store as an empty member and catches up; a demoted one
        drops its copy of the store. Containers keep running and the agent re-adopts them."""
        try:
            async with self._swarm_lock:
                state, renewer = self.state, self.renewer
                if state is None or renewer is None:
                    return
                managers = list(self.agent.managers) if self.agent is not None else list(state.managers)
                issued = await renewer.renew_once()
                role = identity.parse_identity(issued.certificate).role
                if (role == rpc.MANAGER_OU) != to_manager:
                    log.info("role change not granted yet (certificate role %s); will retry", role)
                    return
                # Checked before anything stops: a swarm plugin this daemon cannot build refuses
                # the promotion with its one line while the node still runs as a worker.
                plugins = self._adopt_swarm_plugins(issued.plugins) if to_manager else {}
                await self._stop_swarm()
                state.managers = managers
                if to_manager:
                    state.role, state.plugins = "manager", plugins
                    await self._start_swarm(state, bootstrap=False, join_via=managers[0])
                    log.info("this node was promoted: it is now a manager")
                else:
                    shutil.rmtree(self.state_dir / "plugins", ignore_errors=True)
                    state.role = "worker"
                    self.keyring.release()  # workers are never locked: the TLS key in clear again
                    state.plugins = {"transport": self.selection["transport"]}
                    await self._start_swarm(state, bootstrap=False)
                    log.info("this node was demoted: it is now a worker")
                save_state(self.state_dir, state)
        except Exception as exc:
            log.error("could not change this node's role: %s", exc)

    async def swarm_join(self, params: dict[str, Any]) -> Any:
        async with self._swarm_lock:
            if self.state is not None:
                raise APIError(
                    StatusCode.FAILED_PRECONDITION,
                    'This node is already part of a swarm. Use "shoal swarm leave" to leave this swarm '
                    "and join another one.",
                )
            return await self._join(params)

    async def _join(self, params: dict[str, Any]) -> Any:
        assert self.runtime is not None and self.transport is not None
        token = str(params.get("token") or "").strip()
        if not token:
            raise SpecError("a join token is required: shoal swarm join --token TOKEN MANAGER_ADDR")
        parsed = tokens.parse(token)
        remote_host, remote_port = split_addr(str(params.get("remote_addr") or ""))
        remote = f"{remote_host}:{remote_port}"
        availability = parse_availability(params.get("availability"))
        listen = str(params.get("listen_addr") or self.config.listen_addr)
        listen_host, listen_port = split_addr(listen)
        advertise = str(params.get("advertise_addr") or self.config.advertise_addr or "")
        adv_host, adv_port = split_addr(advertise, listen_port) if advertise else (listen_host, listen_port)
        try:
            await self.runtime.describe()
        except RuntimeError_ as exc:
            raise APIError(StatusCode.UNAVAILABLE, f"cannot join: the container engine: {exc}") from None

        # 1. The root CA, fetched without trusting it, then checked against the token's digest.
        try:
            raw = await self.transport.call(
                remote, rpc.GET_ROOT_CA, b"", tls=TLSMaterial(root_pem=b""), timeout=10
            )
        except RPCError as exc:
            # The transport says what answered there (nothing, no TLS, not a shoal manager).
            raise APIError(StatusCode.UNAVAILABLE, f"cannot join: {exc.message}") from None
        root_pem = _root_from(raw)
        if not root_pem:
            raise APIError(
                StatusCode.UNAVAILABLE,
                f"cannot join: {remote} did not answer as a shoal manager (no root CA in its answer)",
            )
        if tokens.root_digest(root_pem) != parsed.digest:
            raise APIError(
                StatusCode.PERMISSION_DENIED,
                f"the root CA presented by {remote} does not match the join token's digest: refusing to join "
                "(the token is for another swarm, or something is intercepting the connection)",
            )
        # 2. A key that never leaves this node, a CSR, and the token, over TLS checked against that root.
        key_pem = identity.generate_key()
        request = rpb.IssueNodeCertificateRequest(
            csr=identity.build_csr(key_pem), token=token, availability=availability
        )
        try:
            raw = await self.transport.call(
                remote,
                rpc.ISSUE_NODE_CERTIFICATE,
                request.SerializeToString(),
                tls=TLSMaterial(root_pem=root_pem),
                timeout=30,
            )
        except RPCError as exc:
            code = exc.code if exc.code != StatusCode.UNKNOWN else StatusCode.UNAVAILABLE
            raise APIError(
                code, f"the manager at {remote} refused to admit this node: {exc.message}"
            ) from None
        issued = rpb.IssueNodeCertificateResponse.FromString(raw)
        identity.verify_chain(issued.certificate, root_pem)
        peer = identity.parse_identity(issued.certificate)
        if (
            peer.node_id != issued.node_id
            or peer.cluster_id != issued.cluster_id
            or peer.role not in (rpc.WORKER_OU, rpc.MANAGER_OU)
        ):
            raise APIError(
                StatusCode.PERMISSION_DENIED, f"the certificate issued by {remote} has the wrong subject"
            )
        as_manager = peer.role == rpc.MANAGER_OU
        plugins = {"transport": self.selection["transport"]}
        if as_manager:
            plugins = self._adopt_swarm_plugins(issued.plugins)
        else:
            plugins.update(self._adopt_node_plugins(issued.plugins))
        state = NodeState(
            node_id=issued.node_id,
            cluster_id=issued.cluster_id,
            role="manager" if as_manager else "worker",
            listen_addr=f"{listen_host}:{listen_port}",
            advertise_addr=f"{adv_host}:{adv_port}",
            managers=[remote],
            plugins=plugins,
        )
        self.state = state
        try:
            # The token is deliberately not stored anywhere: a node never needs it again.
            identity.write_credentials(
                self.state_dir / CERTS_DIR,
                identity.NodeCredentials(key_pem=key_pem, cert_pem=issued.certificate, root_pem=root_pem),
            )
            await self._start_swarm(state, bootstrap=False, join_via=remote if as_manager else "")
            save_state(self.state_dir, state)
        except BaseException:
            await self._stop_swarm()
            self.state = None
            for leftover in (
                self.state_dir / CERTS_DIR,
                self.state_dir / "worker",
                self.state_dir / "plugins",
            ):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
            raise
        return {"NodeID": issued.node_id, "ClusterID": issued.cluster_id, "Role": state.role}

    async def swarm_leave(self, params: dict[str, Any]) -> Any:
        """Leave the swarm: stop the agent, remove this node's containers, forget the identity."""
        async with self._swarm_lock:
            state = self.state
            if state is None:
                raise APIError(StatusCode.FAILED_PRECONDITION, "This node is not part of a swarm")
            if state.is_manager and not params.get("force"):
                raise APIError(
                    StatusCode.FAILED_PRECONDITION,
                    "You are attempting to leave the swarm on a node that is participating as a manager. "
                    "Removing the last manager erases all current state of the swarm. Use `--force` to ignore "
                    "this message.",
                )
            agent = self.agent
            if agent is not None:
                await agent.remove_all()
            await self.network.cleanup(self.loader, self._context("network"))
            await self._stop_swarm()
            if self.runtime is not None:
                with contextlib.suppress(RuntimeError_):
                    for ref in await self.runtime.list_containers(state.node_id):
                        stray = pb.Task(id=ref.task_id, node_id=state.node_id, service_id=ref.service_id)
                        await self.runtime.shutdown(stray, 0.0)
                        await self.runtime.remove(stray)
            self.keyring.release()
            self.locked = False
            for leftover in (
                self.state_dir / CERTS_DIR,
                self.state_dir / "plugins",
                self.state_dir / "worker",
            ):
                shutil.rmtree(leftover, ignore_errors=True)
            (self.state_dir / "state.json").unlink(missing_ok=True)
            self.state = None
            return {"NodeID": state.node_id}

    # ------------------------------------------------------------------ local API

    def _register_api(self) -> None:
        api = self.api
        api.unary["swarm.init"] = self.swarm_init
        api.unary["swarm.join"] = self.swarm_join
        api.unary["swarm.leave"] = self.swarm_leave
        api.unary["swarm.unlock"] = self.swarm_unlock
        api.unary["info"] = self.info
        api.streams["service.logs"] = self.service_logs
        api.streams["events"] = self.events
        for method in CONTROL_METHODS:  # every registered control method, through the manager
            api.unary[method] = self._control(method)

    # ------------------------------------------------------------------ autolock

    def _stays_locked(self, state: NodeState) -> bool:
        """A manager whose keys need the unlock key starts locked (Swarm: workers never are)."""
        self.locked = state.is_manager and self.keyring.needs_unlock()
        return self.locked

    def _not_serving(self) -> APIError:
        """Why a swarm command cannot run here: the manager is locked, or this is no manager."""
        if self.locked:
            return APIError(StatusCode.FAILED_PRECONDITION, statekeys.LOCKED_MESSAGE)
        return APIError(StatusCode.FAILED_PRECONDITION, NOT_IN_SWARM)

    def _init_keys(self, cluster: pb.Cluster, autolock: bool) -> bytes:
        """``swarm init [--autolock]``: this manager's keys, and the unlock key in the cluster."""
        unlock_key = statekeys.new_key() if autolock else None
        if unlock_key is not None:
            cluster.spec.encryption_config.auto_lock_managers = True
            cluster.manager_unlock_key = unlock_key
        self.keyring.create(unlock_key)
        return unlock_key or b""

    async def swarm_unlock(self, params: dict[str, Any]) -> Any:
        """``swarm unlock``: open this manager's keys with the unlock key, then start it."""
        async with self._swarm_lock:
            if self.state is None:
                raise APIError(StatusCode.FAILED_PRECONDITION, "This node is not part of a swarm")
            if not self.locked:
                raise APIError(StatusCode.FAILED_PRECONDITION, "swarm is not locked")
            try:
                self.keyring.unlock(statekeys.parse_unlock_key(str(params.get("key") or "")))
            except ValueError as exc:  # SealError included: the key does not open these keys
                raise APIError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
            self.locked = False
            try:
                await self._start_swarm(self.state, bootstrap=False)
            except BaseException:
                await self._stop_swarm()
                self.locked, self.keyring.keys = True, None
                raise
            log.info("swarm unlocked: this manager has started")
            return {}

    def _control(self, method: str) -> Any:
        async def call(params: dict[str, Any]) -> Any:
            if self.manager is None:
                raise self._not_serving()
            return await self.manager.call(method, params)

        return call

    async def info(self, params: dict[str, Any]) -> Any:
        state = self.state
        result: dict[str, Any] = {
            "Swarm": ("locked" if self.locked else "active") if state else "inactive",
            "Plugins": self.selection,
            "StateDir": str(self.state_dir),
        }
        if state is not None and not self.locked:  # locked: nothing to say but that
            result.update(
                NodeID=state.node_id,
                ClusterID=state.cluster_id,
                Role=state.role,
                ListenAddr=state.listen_addr,
                AdvertiseAddr=state.advertise_addr,
                Managers=self.manager.manager_addrs()
                if self.manager
                else (self.agent.managers if self.agent else state.managers),
                IsLeader=bool(self.manager and self.manager.is_leader()),
                AgentConnected=bool(self.agent and self.agent.connected.is_set()),
            )
            if self.server is not None:
                result["BoundAddr"] = self.server.address
            if self.manager is not None:
                result["Store"] = self.manager.store_provider.status()
                result["Cluster"] = cluster_summary(self.manager.store.view)
        return result

    async def service_logs(self, params: dict[str, Any]) -> AsyncIterator[Any]:
        """Output of the service's tasks on every node, prefixed like docker's (servicelogs)."""
        if self.manager is None or self.runtime is None:
            raise self._not_serving()
        service = self.manager.control.find_service(str(params.get("service") or ""))
        assert self.transport is not None
        reader = LogReader(
            node_id=self.manager.node_id,
            runtime=self.runtime,
            transport=self.transport,
            tls=self._tls,
            store=self.manager.store,
        )
        items = service_log_items(
            reader,
            service.id,
            follow=bool(params.get("follow")),
            tail=parse_tail(params.get("tail")),
            since=since_param(params.get("since")),
        )
        async for item in items:
            yield item

    async def events(self, params: dict[str, Any]) -> AsyncIterator[Any]:
        """``shoal events``: this manager's own ring of the swarm's events (manager/events.py)."""
        if self.manager is None:
            raise self._not_serving()
        query = parse_query(params)
        async for message in self.manager.events.follow(query):
            yield message


#: The GIL hand-off interval for the daemon. gRPC's I/O thread and the event loop pass the
#: GIL back and forth on every RPC; at Python's default (5 ms) a hand-off can stall a store
#: round trip by milliseconds.
SWITCH_INTERVAL = 0.0005


async def serve(config: DaemonConfig) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Before anything is written: the state dir holds keys, secrets and service env.
    filemodes.restrict_umask()
    filemodes.secure_state_dir(config.state_dir)
    daemon = Daemon(config)
    daemon.load_node_plugins()
    await daemon.run()
