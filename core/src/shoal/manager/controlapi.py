"""The control API: what the CLI asks a manager to read or change.

Requests and responses are JSON-shaped dicts so that the same handlers serve the local Unix
socket and calls forwarded between managers. Every write validates first and raises
``ControlError`` with a one-line message; nothing is stored on bad input.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import json_format

from shoal import boundedjson, externalca, namegen, ports, rpc, tokens
from shoal.ids import new_id
from shoal.manager import (
    autolock,
    clustersettings,
    jobs,
    listfilters,
    methods,
    netalloc,
    netobjects,
    netrefs,
    registryauth,
    secretrefs,
    tasklist,
)
from shoal.manager import ports as portalloc
from shoal.manager import requests as rq
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.proto import objects_pb2 as pb
from shoal.roles.ca import ExternalCA
from shoal.roles.transport import StatusCode
from shoal.specs import (
    SpecError,
    parse_duration,
    service_spec,
    updated_spec,
    whole_number,
)
from shoal.store.memory import ObjectStore, Tx, copy

Handler = methods.Handler
#: Raft tick counts are uint32 in the cluster object.
UINT32_MAX = 2**32 - 1


class ControlError(Exception):
    """A request failed; ``code`` classifies it, the message is shown to the user as is."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def control_params(json_body: bytes) -> dict[str, Any]:
    """The parameters of a forwarded control call, parsed with the local API's limits (size,
    nesting): a bad body is an ``INVALID_ARGUMENT`` line, never a traceback on the leader."""
    try:
        params = boundedjson.loads(json_body or b"{}")
    except boundedjson.BadJSON as exc:
        raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
    if not isinstance(params, dict):
        raise ControlError(StatusCode.INVALID_ARGUMENT, "malformed request: params must be a JSON object")
    return params


#: A list of references from the params, checked (``requests.refs``; other modules import it here).
refs = rq.refs


def external_ca_fields(value: Any) -> list[dict[str, str]]:
    """``external_cas`` as the CLI sends it: a list of objects of strings (one per flag), each
    with a protocol and a URL."""
    if not isinstance(value, list) or not all(
        isinstance(fields, dict)
        and all(isinstance(v, str) for v in fields.values())
        and {"protocol", "url"} <= fields.keys()
        for fields in value
    ):
        raise SpecError(
            'invalid --external-ca: give a list of objects such as {"protocol": "cfssl", "url": "https://..."}'
        )
    return value


def _empty_ref(what: str) -> ControlError:
    return ControlError(StatusCode.INVALID_ARGUMENT, f'a {what} ID or name is required, not ""')


def to_dict(message: Any) -> dict[str, Any]:
    """A stored object as JSON, with field names as in the .proto and enums by name."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def redacted_cluster(cluster: pb.Cluster) -> pb.Cluster:
    """The cluster object without its CA key, secrets keys and unlock key (never leave the
    store; the unlock key only through ``swarm unlock-key``)."""
    clean = copy(cluster)
    clean.root_ca.ca_key = b""
    clean.manager_unlock_key = b""
    clean.ClearField("secrets_material")
    return clean


def _allocate_ports(tx: Tx, service: pb.Service) -> None:
    """Fill ``service.endpoint`` for its spec inside the write: published ports
    (``manager/ports.py``) and one virtual IP per network (``manager/netobjects.py``)."""
    try:
        endpoint = portalloc.allocate(tx, service.id, service.spec.endpoint)
        endpoint.virtual_ips.extend(service.endpoint.virtual_ips)
        holder = pb.Service(spec=service.spec, endpoint=endpoint)
        netobjects.Allocations.of(tx).service_vips(holder)
    except (portalloc.PortError, netalloc.AllocationError) as exc:
        raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
    if holder.endpoint.ports or holder.endpoint.virtual_ips:
        service.endpoint.CopyFrom(holder.endpoint)
    else:
        service.ClearField("endpoint")


class ControlAPI:
    """Handlers for the ``node.*``, ``service.*``, ``swarm.*`` and ``task.*`` methods (which
    ones, and their request types: ``methods.CONTROL_METHODS``)."""

    def __init__(
        self,
        store: ObjectStore,
        node_id: str,
        manager_status: Callable[[pb.Node], str] | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        #: MANAGER STATUS from the live store membership (Leader/Reachable/Unreachable);
        #: without it, what the node object recorded.
        self.manager_status = manager_status
        #: The other components that serve registered methods (the manager gives itself, its
        #: secrets and its networks); without them only this object's methods are bound.
        self.owners: dict[methods.Owner, object] = {}
        #: Seals ``--with-registry-auth`` credentials (service name, AuthConfig JSON) with the
        #: swarm's secrets plugin; the manager sets it (``registryauth.seal``).
        self.seal_registry_auth: Callable[[str, bytes], Awaitable[pb.Secret]] | None = None
        #: Refuses (``SpecError``) ``swarm update --external-ca`` values the swarm's CA plugin
        #: does not serve; the manager sets it from its CA provider.
        self.check_external_cas: Callable[[list[ExternalCA]], None] = lambda cas: None
        self._handlers: dict[str, Handler] | None = None
        self._built_with: dict[methods.Owner, object] | None = None
        #: ``service ps``'s compact rows, kept for the next listing (``tasklist.RowCache``).
        self._ps_rows = tasklist.RowCache()

    @property
    def ps_rows(self) -> tasklist.RowCache:
        """``service ps``'s kept rows (a leader builds them ahead: ``rowwarm.RowWarmer``)."""
        return self._ps_rows

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler (params parsed into the method's request type), derived from
        the registry and built once: every control call looks its handler up here."""
        if self._handlers is None or self._built_with is not self.owners:
            self._handlers = methods.bind({methods.Owner.CONTROL: self, **self.owners})
            self._built_with = self.owners
        return self._handlers

    async def task_inspect(self, request: rq.TaskRefs) -> Any:
        from shoal.manager.taskinspect import find_task

        return [to_dict(find_task(self.store, ref)) for ref in request.refs]

    # ------------------------------------------------------------------ lookups

    def find_node(self, ref: str) -> pb.Node:
        """A node by ID, unique ID prefix or hostname; "self" is this node."""
        view = self.store.view
        if not ref:
            raise _empty_ref("node")
        if ref == "self":
            ref = self.node_id
        node = view.nodes.get(ref)
        if node is not None:
            return node
        matches = [n for n in view.nodes.all() if n.id.startswith(ref) or n.description.hostname == ref]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ControlError(StatusCode.NOT_FOUND, f"node {ref} not found")
        raise ControlError(StatusCode.INVALID_ARGUMENT, f"node {ref} is ambiguous ({len(matches)} matches)")

    def find_service(self, ref: str) -> pb.Service:
        """A service by ID, name or unique ID prefix."""
        if not ref:
            raise _empty_ref("service")
        view = self.store.view
        service = view.services.get(ref) or view.service_by_name(ref)
        if service is not None:
            return service
        matches = [s for s in view.services.all() if s.id.startswith(ref)]
        if len(matches) == 1 and ref:
            return matches[0]
        if len(matches) > 1:
            raise ControlError(
                StatusCode.INVALID_ARGUMENT, f"service {ref} is ambiguous ({len(matches)} matches)"
            )
        raise ControlError(StatusCode.NOT_FOUND, f"service {ref} not found")

    # ------------------------------------------------------------------ swarm

    async def swarm_inspect(self, request: rq.NoParams) -> Any:
        cluster = self.store.view.cluster()
        if cluster is None:
            raise ControlError(StatusCode.FAILED_PRECONDITION, "the swarm has no cluster object yet")
        return to_dict(redacted_cluster(cluster))

    async def swarm_update(self, request: rq.Options) -> Any:
        """``swarm update``: certificate expiry, heartbeat period, task history limit."""
        params = request.options
        changes: list[Callable[[pb.Cluster], None]] = []
        try:
            changes.extend(clustersettings.changes(params))
            if params.get("external_cas"):
                requested = externalca.from_request(external_ca_fields(params["external_cas"]))
                self.check_external_cas(requested)
                cas = externalca.to_spec(requested)

                def set_cas(c: pb.Cluster) -> None:
                    del c.spec.ca_config.external_cas[:]
                    c.spec.ca_config.external_cas.extend(cas)

                changes.append(set_cas)
            changes.extend(self._raft_timing(params))
            changes.extend(autolock.autolock_changes(params))
        except SpecError as exc:
            raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if not changes:
            raise ControlError(
                StatusCode.INVALID_ARGUMENT,
                "nothing to update: give --cert-expiry, --dispatcher-heartbeat, --task-history-limit, "
                "--snapshot-interval, --max-snapshots, --external-ca, --raft-tick, --election-tick, "
                "--heartbeat-tick or --autolock",
            )

        def update(tx: Tx) -> None:
            cluster = tx.cluster()
            if cluster is None:
                raise ControlError(StatusCode.FAILED_PRECONDITION, "the swarm has no cluster object yet")
            cluster = copy(cluster)
            for change in changes:
                change(cluster)
            tx.update(cluster)

        await self.store.update(update)
        return {"updated": True}

    def _raft_timing(self, params: dict[str, Any]) -> list[Callable[[pb.Cluster], None]]:
        """``--raft-tick``, ``--election-tick``, ``--heartbeat-tick``: checked together against
        the current values (an election must take longer than a heartbeat)."""
        cluster = self.store.view.cluster()
        raft = cluster.spec.raft if cluster is not None else pb.RaftConfig()
        tick_ms, election, heartbeat = raft.tick_ms, raft.election_tick, raft.heartbeat_tick
        given = False
        if params.get("raft_tick") is not None:
            seconds = parse_duration(str(params["raft_tick"]), "--raft-tick")
            tick_ms = round(seconds * 1000)
            if not 10 <= tick_ms <= 10000:
                raise SpecError(f'invalid --raft-tick "{params["raft_tick"]}": use 10ms to 10s')
            given = True
        for key, flag in (("election_tick", "--election-tick"), ("heartbeat_tick", "--heartbeat-tick")):
            if params.get(key) is None:
                continue
            value = whole_number(params[key], flag, 1, UINT32_MAX)
            election, heartbeat = (value, heartbeat) if key == "election_tick" else (election, value)
            given = True
        if not given:
            return []
        if election <= heartbeat:
            raise SpecError(
                f"the election tick ({election}) must be greater than the heartbeat tick ({heartbeat})"
            )

        def set_timing(c: pb.Cluster) -> None:
            c.spec.raft.tick_ms, c.spec.raft.election_tick, c.spec.raft.heartbeat_tick = (
                tick_ms,
                election,
                heartbeat,
            )

        return [set_timing]

    async def swarm_join_token(self, request: rq.JoinToken) -> Any:
        """The join token for a role, optionally rotated first (only future joins are affected)."""
        role = request.role
        if request.rotate:

            def rotate(tx: Tx) -> None:
                cluster = tx.cluster()
                if cluster is None:
                    raise ControlError(StatusCode.FAILED_PRECONDITION, "the swarm has no cluster object yet")
                cluster = copy(cluster)
                setattr(cluster.root_ca.join_tokens, role, tokens.new_token(cluster.root_ca.ca_cert))
                tx.update(cluster)

            await self.store.update(rotate)
        cluster = self.store.view.cluster()
        assert cluster is not None
        node = self.store.view.nodes.get(self.node_id)
        addr = node.manager_status.addr if node is not None else ""
        return {
            "Token": getattr(cluster.root_ca.join_tokens, role),
            "ManagerAddr": addr,
            "Rotated": request.rotate,
        }

    # ------------------------------------------------------------------ nodes

    async def node_update(self, request: rq.NodeUpdate) -> Any:
        """``node update``: availability and labels."""
        node = self.find_node(request.node)
        new_availability, label_add, label_rm = request.availability, request.label_add, request.label_rm
        for key in label_rm:
            if key not in node.spec.annotations.labels and not any(
                a.partition("=")[0] == key for a in label_add
            ):
                raise ControlError(StatusCode.NOT_FOUND, f"key \"{key}\" doesn't exist in node's labels")

        def update(tx: Tx) -> None:
            current = tx.node(node.id)
            if current is None:
                raise ControlError(StatusCode.NOT_FOUND, f"node {node.id} not found")
            current = copy(current)
            if new_availability is not None:
                current.spec.availability = new_availability
            for label in label_add:
                key, _, value = label.partition("=")
                current.spec.annotations.labels[key] = value
            for key in label_rm:
                current.spec.annotations.labels.pop(key, None)
            tx.update(current)

        await self.store.update(update)
        return {"ID": node.id}

    async def node_rm(self, request: rq.NodeRemove) -> Any:
        """``node rm [-f]``: a node must be down (or forced); a manager must be demoted first."""
        force = request.force
        nodes = [self.find_node(ref) for ref in request.refs]
        for node in nodes:
            if node.role == pb.NodeSpec.MANAGER:
                raise ControlError(
                    StatusCode.FAILED_PRECONDITION,
                    f"node {node.id} is a cluster manager and is a member of the raft cluster. "
                    "It must be demoted to worker before removal",
                )
            if node.status.state != pb.NodeStatus.DOWN and not force:
                raise ControlError(
                    StatusCode.FAILED_PRECONDITION,
                    f"node {node.id} is not down and can't be removed (use --force to remove it anyway)",
                )

        def remove(tx: Tx) -> None:
            for node in nodes:
                tx.delete("node", node.id)
            # Same transaction: no replica ever sees the node gone but its certificate still good.
            rpc.record_removed(tx, [n.id for n in nodes], "node rm")

        await self.store.update(remove)
        return [n.id for n in nodes]

    def _node_row(self, node: pb.Node) -> dict[str, Any]:
        status = pb.NodeStatus.State.Name(node.status.state).capitalize()
        availability = pb.NodeSpec.Availability.Name(node.spec.availability).capitalize()
        manager_status = ""
        if self.manager_status is not None:
            # Only a manager, or a node on its way in or out, is a store member: asking the
            # store's membership for each of a thousand workers was most of ``node ls``.
            if node.role == pb.NodeSpec.MANAGER or node.spec.desired_role == pb.NodeSpec.MANAGER:
                manager_status = self.manager_status(node)
        elif node.role == pb.NodeSpec.MANAGER:
            if node.manager_status.leader:
                manager_status = "Leader"
            else:
                manager_status = pb.ManagerStatus.Reachability.Name(
                    node.manager_status.reachability
                ).capitalize()
        return {
            "ID": node.id,
            "Hostname": node.description.hostname,
            "Status": status,
            "Availability": availability,
            "ManagerStatus": manager_status,
            "EngineVersion": node.description.engine.engine_version,
            "Self": node.id == self.node_id,
        }

    async def node_ls(self, request: rq.NodeList) -> Any:
        nodes = sorted(self.store.view.nodes.all(), key=lambda n: n.description.hostname or n.id)
        filters = request.filters  # none: no per-node test (a thousand nodes, twice a second)
        return [self._node_row(n) for n in nodes if listfilters.node_matches(n, filters)]

    async def node_inspect(self, request: rq.NodeInspect) -> Any:
        return [to_dict(self.find_node(ref)) for ref in request.nodes]

    # ------------------------------------------------------------------ services

    async def service_create(self, request: rq.Options) -> Any:
        params = request.options
        if not params.get("name"):  # docker's adjective_surname, one no service has
            view = self.store.view
            params = {
                **params,
                "name": namegen.unused_name(lambda name: view.service_by_name(name) is not None),
            }
        try:
            spec = service_spec(params)
            secretrefs.apply_create(self.store.view, spec, params)
            netrefs.apply(self.store.view, spec, params, creating=True)
            credentials = registryauth.requested(params)
        except SpecError as exc:
            raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        service = pb.Service(id=new_id(), spec=spec, spec_version=1)
        jobs.start_iteration(service)
        if credentials is not None:
            service.registry_auth.CopyFrom(await self._sealed(spec.annotations.name, credentials))

        def create(tx: Tx) -> None:
            if tx.view.service_by_name(spec.annotations.name) is not None:
                raise ControlError(
                    StatusCode.ALREADY_EXISTS, f'service name "{spec.annotations.name}" is already in use'
                )
            _allocate_ports(tx, service)
            tx.create(service)

        await self.store.update(create)
        return {"ID": service.id}

    def _running(self, service: pb.Service) -> int:
        return self.store.derived(ServiceTaskCounts).running(service.id)

    def _desired(self, service: pb.Service) -> int:
        """Replicas asked for; for a global service, the tasks it should run now (one per
        eligible node, as docker counts them: tasks with desired state running)."""
        if service.spec.WhichOneof("mode") == "global":
            return self.store.derived(ServiceTaskCounts).desired(service.id)
        return int(service.spec.replicated.replicas)

    def _service_row(self, service: pb.Service) -> dict[str, Any]:
        desired = self._desired(service)
        running = self._running(service)
        replicas_text = f"{running}/{desired}"
        mode = service.spec.WhichOneof("mode") or "replicated"
        if jobs.is_job(service):
            running, desired, replicas_text = jobs.counts(service, self.store.view.service_tasks(service.id))
        elif service.spec.task.placement.max_replicas:
            replicas_text += f" (max {service.spec.task.placement.max_replicas} per node)"
        status = service.update_status
        # docker's columns, with the update state shown beside the counts while it matters
        # (the way docker appends "(max N per node)").
        shown = {
            pb.UpdateStatus.UPDATING: "updating",
            pb.UpdateStatus.PAUSED: "update paused",
            pb.UpdateStatus.ROLLBACK_STARTED: "rolling back",
            pb.UpdateStatus.ROLLBACK_PAUSED: "rollback paused",
        }
        if status.state in shown:
            replicas_text += f" ({shown[status.state]})"
        return {
            "ID": service.id,
            "Name": service.spec.annotations.name,
            "Mode": jobs.MODE_WORDS.get(mode, mode),
            "Replicas": replicas_text,
            "Image": service.spec.task.container.image,
            "Ports": ports.ls_text(service.endpoint.ports),
            "Running": running,
            "Desired": desired,
            "UpdateState": pb.UpdateStatus.UpdateState.Name(status.state).lower() if status.state else "",
            "UpdateMessage": status.message,
        }

    async def service_ls(self, request: rq.ServiceList) -> Any:
        services = sorted(self.store.view.services.all(), key=lambda s: s.spec.annotations.name)
        filters = request.filters
        return [self._service_row(s) for s in services if listfilters.service_matches(s, filters)]

    async def service_inspect(self, request: rq.ServiceRefs) -> Any:
        found = [self.find_service(ref) for ref in request.refs]
        return [registryauth.shown(service, to_dict(service)) for service in found]

    async def _sealed(self, service_name: str, credentials: bytes) -> pb.Secret:
        """``credentials`` sealed for ``Service.registry_auth`` (one line when it cannot be)."""
        if self.seal_registry_auth is None:
            raise ControlError(
                StatusCode.FAILED_PRECONDITION, "this manager cannot keep registry credentials"
            )
        try:
            return await self.seal_registry_auth(service_name, credentials)
        except SpecError as exc:
            raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None

    async def service_ps(self, request: rq.TaskList) -> Any:
        view = self.store.view
        wanted = request.filters
        tasks: list[pb.Task] = []
        if request.node is not None:
            tasks = view.node_tasks(self.find_node(request.node).id)
        else:
            for ref in request.services:
                tasks.extend(view.service_tasks(self.find_service(ref).id))
        if request.compact and request.pieces:  # written while built (issue 18 item 2)
            return tasklist.StreamedRows(view, tasks, wanted, self._ps_rows)
        if request.compact:  # the CLI's: lists of the columns it prints (issue 18 item 2)
            rows = await tasklist.task_rows(view, tasks, wanted, compact=True, cache=self._ps_rows)
            return {"columns": list(tasklist.COMPACT_COLUMNS), "rows": rows, "now": time.time()}
        return {"tasks": await tasklist.task_rows(view, tasks, wanted), "now": time.time()}

    async def service_scale(self, request: rq.ServiceScale) -> Any:
        count = request.replicas
        service = self.find_service(request.service)
        if service.spec.WhichOneof("mode") not in ("replicated", "replicated_job"):
            raise ControlError(
                StatusCode.FAILED_PRECONDITION,
                "scale can only be used with replicated or replicated-job mode: "
                f"{service.spec.annotations.name} is not",
            )

        def scale(tx: Tx) -> None:
            current = tx.service(service.id)
            if current is None:
                raise ControlError(StatusCode.NOT_FOUND, f"service {service.spec.annotations.name} not found")
            current = copy(current)
            if jobs.is_job(current):  # docker scales a replicated job's total completions
                current.spec.replicated_job.total_completions = count
                jobs.start_iteration(current)
            else:
                current.spec.replicated.replicas = count
            current.spec_version += 1
            tx.update(current)

        await self.store.update(scale)
        return {"ID": service.id, "Replicas": count}

    async def service_update(self, request: rq.ServiceUpdate) -> Any:
        """``service update``: a new spec (the old one kept as previous), or a rollback.

        A changed spec clears the update status, which is also how a paused update resumes.
        ``rollback`` swaps the spec and the previous spec (rolling back twice returns to the
        newer one); the updater then walks the tasks back with the rollback config.
        """
        params = request.options
        service = self.find_service(request.service)
        if request.rollback:
            return await self._rollback(service)
        replace = bool(params.get("replace"))  # stack deploy: a whole new spec from create's options
        try:
            if replace:
                spec = service_spec({**params, "name": service.spec.annotations.name})
                spec.task.force_update = service.spec.task.force_update
                secretrefs.apply_create(self.store.view, spec, params)
                netrefs.apply(self.store.view, spec, params, creating=True)
            else:
                spec = updated_spec(service.spec, params)
                secretrefs.apply_update(self.store.view, spec, params)
                netrefs.apply(self.store.view, spec, params, creating=False)
            credentials = registryauth.requested(params)
        except SpecError as exc:
            raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if replace and spec == service.spec and credentials is None:
            return {"ID": service.id, "Changed": False}  # untouched: no new version, no update
        name = service.spec.annotations.name
        # Without --with-registry-auth the credentials already kept stay (docker's rule); new
        # ones replace them for the tasks sent from now on (no rolling update of their own).
        sealed = await self._sealed(name, credentials) if credentials is not None else None

        def update(tx: Tx) -> None:
            current = tx.service(service.id)
            if current is None:
                raise ControlError(StatusCode.NOT_FOUND, f"service {name} not found")
            current = copy(current)
            if current.spec != spec:
                current.previous_spec.CopyFrom(current.spec)
                current.previous_spec_version = current.spec_version
                current.spec.CopyFrom(spec)
                current.spec_version += 1
                jobs.start_iteration(current)  # a changed job runs again
                _allocate_ports(tx, current)
            if sealed is not None:
                current.registry_auth.CopyFrom(sealed)
            current.ClearField("update_status")
            tx.update(current)

        await self.store.update(update)
        return {"ID": service.id}

    async def service_rollback(self, request: rq.ServiceRef) -> Any:
        return await self._rollback(self.find_service(request.service))

    async def _rollback(self, service: pb.Service) -> Any:
        name = service.spec.annotations.name

        def rollback(tx: Tx) -> None:
            current = tx.service(service.id)
            if current is None:
                raise ControlError(StatusCode.NOT_FOUND, f"service {name} not found")
            if not current.HasField("previous_spec"):
                raise ControlError(
                    StatusCode.FAILED_PRECONDITION, f"service {name} does not have a previous spec"
                )
            current = copy(current)
            previous = pb.ServiceSpec()
            previous.CopyFrom(current.previous_spec)
            current.previous_spec.CopyFrom(current.spec)
            current.previous_spec_version = current.spec_version
            current.spec.CopyFrom(previous)
            current.spec_version += 1
            _allocate_ports(tx, current)
            current.update_status.Clear()
            current.update_status.state = pb.UpdateStatus.ROLLBACK_STARTED
            current.update_status.message = "manually requested rollback"
            current.update_status.started_at = time.time()
            tx.update(current)

        await self.store.update(rollback)
        return {"ID": service.id}

    async def service_rm(self, request: rq.ServiceRefs) -> Any:
        services = [self.find_service(ref) for ref in request.refs]

        def remove(tx: Tx) -> None:
            # Only the service: the orchestrator marks its tasks for removal a bounded piece
            # per transaction (as Swarm's RemoveService leaves them to its orchestrator). Marking
            # them here made `service rm` of 100,000 replicas one Raft entry of 100,000 changes
            # that every manager encoded, wrote and applied in one go, and cost the leader its
            # leadership.
            for service in services:
                tx.delete("service", service.id)

        await self.store.update(remove)
        return [s.spec.annotations.name for s in services]
