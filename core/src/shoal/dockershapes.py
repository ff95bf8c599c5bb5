"""shoal's stored objects in the Docker Engine API's JSON shapes (``GET /services/{id}`` etc.).

A Swarm user's scripts read ``.Spec.TaskTemplate.ContainerSpec.Image``, ``.Version.Index`` and
``.Spec.Mode.Replicated.Replicas`` from ``docker service inspect``; protobuf's own JSON (snake
case, epoch floats, 64-bit numbers as strings, zero values dropped) breaks every one of them.
This module is the one place that turns a protobuf object into Docker's shape, so that the CLI
prints it today and a Docker-compatible HTTP API can serve the very same dicts later.

Rules, as the Engine API does it: times are RFC 3339 with nanoseconds in UTC (Go's
``RFC3339Nano``, the zero time ``0001-01-01T00:00:00Z`` when unset); durations are integer
nanoseconds; enums are docker's lower-case words ("worker", "ready", "on-failure"); fields
docker marks ``omitempty`` are left out when empty, the others (a worker's ``Spec.Role``) always
appear. A secret's value never appears (the manager does not send it; this module never reads it).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from shoal.proto import objects_pb2 as pb

#: Go's zero ``time.Time`` as the Engine API prints it.
ZERO_TIME = "0001-01-01T00:00:00Z"
NANOS = 1_000_000_000

JSON = dict[str, Any]


def rfc3339(seconds: float) -> str:
    """Unix seconds -> ``2026-12-06T17:47:09.123456789Z`` (Go's RFC3339Nano: fraction trimmed
    of trailing zeros, none for a whole second)."""
    if not seconds:
        return ZERO_TIME
    nanos = round(seconds * NANOS)
    whole, fraction = divmod(nanos, NANOS)
    stamp = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def nanoseconds(seconds: float) -> int:
    """A duration in seconds as Go's ``time.Duration`` (integer nanoseconds)."""
    return round(seconds * NANOS)


def _word(name: str) -> str:
    """``ON_FAILURE`` -> ``on-failure``, docker's spelling of enum values with two words."""
    return name.lower().replace("_", "-")


def _put(shape: JSON, key: str, value: Any) -> None:
    """``shape[key] = value`` unless empty (Go's ``omitempty``)."""
    if value:
        shape[key] = value


def _labels(labels: Any) -> dict[str, str]:
    """A protobuf map as a dict in key order (Go marshals maps sorted)."""
    return dict(sorted(labels.items()))


def _version(meta: pb.Meta) -> JSON:
    return {"Index": int(meta.version)}


def _meta(object_id: str, meta: pb.Meta) -> JSON:
    return {
        "ID": object_id,
        "Version": _version(meta),
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
    }


# ---------------------------------------------------------------------------- service spec


def mount_shape(mount: pb.Mount) -> JSON:
    shape: JSON = {"Type": pb.Mount.Type.Name(mount.type).lower()}
    _put(shape, "Source", mount.source)
    shape["Target"] = mount.target
    _put(shape, "ReadOnly", mount.readonly)
    if mount.type == pb.Mount.TMPFS and mount.tmpfs_size_bytes:
        shape["TmpfsOptions"] = {"SizeBytes": int(mount.tmpfs_size_bytes)}
    return shape


def _file_target(target: pb.FileTarget) -> JSON:
    # docker's FileTarget: UID and GID are strings, Mode an octal permission as a number
    return {"Name": target.name, "UID": str(target.uid), "GID": str(target.gid), "Mode": int(target.mode)}


def healthcheck_shape(health: pb.HealthConfig) -> JSON:
    shape: JSON = {}
    _put(shape, "Test", list(health.test))
    _put(shape, "Interval", nanoseconds(health.interval))
    _put(shape, "Timeout", nanoseconds(health.timeout))
    _put(shape, "StartPeriod", nanoseconds(health.start_period))
    _put(shape, "Retries", int(health.retries))
    return shape


def container_spec_shape(container: pb.ContainerSpec) -> JSON:
    shape: JSON = {"Image": container.image}
    _put(shape, "Labels", _labels(container.labels))
    _put(shape, "Command", list(container.command))
    _put(shape, "Args", list(container.args))
    _put(shape, "Hostname", container.hostname)
    _put(shape, "Env", list(container.env))
    _put(shape, "Dir", container.dir)
    _put(shape, "User", container.user)
    _put(shape, "Mounts", [mount_shape(m) for m in container.mounts])
    if container.stop_grace_period >= 0:  # negative: unset, the engine's 10s
        shape["StopGracePeriod"] = nanoseconds(container.stop_grace_period)
    _put(shape, "StopSignal", container.stop_signal)
    if container.HasField("healthcheck"):
        shape["Healthcheck"] = healthcheck_shape(container.healthcheck)
    _container_options_shape(shape, container)
    _put(
        shape,
        "Secrets",
        [
            {"File": _file_target(s.file), "SecretID": s.secret_id, "SecretName": s.secret_name}
            for s in container.secrets
        ],
    )
    _put(
        shape,
        "Configs",
        [
            {"File": _file_target(c.file), "ConfigID": c.config_id, "ConfigName": c.config_name}
            for c in container.configs
        ],
    )
    shape["Isolation"] = "default"
    return shape


def _container_options_shape(shape: JSON, container: pb.ContainerSpec) -> None:
    """docker's container options (``--cap-add``, ``--dns``, ``--ulimit``...), Go's omitempty."""
    _put(shape, "TTY", container.tty)
    _put(shape, "ReadOnly", container.read_only)
    _put(shape, "Init", container.init)
    _put(shape, "Groups", list(container.groups))
    _put(shape, "Hosts", list(container.hosts))
    if container.HasField("dns_config"):
        dns: JSON = {}
        _put(dns, "Nameservers", list(container.dns_config.nameservers))
        _put(dns, "Search", list(container.dns_config.search))
        _put(dns, "Options", list(container.dns_config.options))
        shape["DNSConfig"] = dns
    _put(shape, "Sysctls", _labels(container.sysctls))
    _put(shape, "CapabilityAdd", list(container.capability_add))
    _put(shape, "CapabilityDrop", list(container.capability_drop))
    _put(
        shape,
        "Ulimits",
        [{"Name": u.name, "Soft": int(u.soft), "Hard": int(u.hard)} for u in container.ulimits],
    )


def _resources(resources: pb.Resources) -> JSON:
    shape: JSON = {}
    _put(shape, "NanoCPUs", int(resources.nano_cpus))
    _put(shape, "MemoryBytes", int(resources.memory_bytes))
    _put(shape, "Pids", int(resources.pids))
    shape.update(_generic_resources(resources))
    return shape


def _generic_resources(resources: pb.Resources) -> JSON:
    """``GenericResources`` (``gpu=2``: a ``DiscreteResourceSpec``), omitted when none."""
    shape: JSON = {}
    _put(
        shape,
        "GenericResources",
        [{"DiscreteResourceSpec": {"Kind": g.kind, "Value": int(g.value)}} for g in resources.generic],
    )
    return shape


def task_spec_shape(task: pb.TaskSpec) -> JSON:
    restart = task.restart
    restart_shape: JSON = {
        "Condition": _word(pb.RestartPolicy.Condition.Name(restart.condition)),
        "Delay": nanoseconds(restart.delay),
        "MaxAttempts": int(restart.max_attempts),
    }
    _put(restart_shape, "Window", nanoseconds(restart.window))
    placement: JSON = {}
    _put(placement, "Constraints", list(task.placement.constraints))
    _put(
        placement,
        "Preferences",
        [{"Spread": {"SpreadDescriptor": p.partition("=")[2]}} for p in task.placement.preferences],
    )
    _put(placement, "MaxReplicas", int(task.placement.max_replicas))
    return {
        "ContainerSpec": container_spec_shape(task.container),
        "Resources": {
            "Limits": _resources(task.resources.limits),
            "Reservations": _resources(task.resources.reservations),
        },
        "RestartPolicy": restart_shape,
        "Placement": placement,
        "ForceUpdate": int(task.force_update),
        "Runtime": "container",
        **_log_driver_shape(task),
    }


def _log_driver_shape(task: pb.TaskSpec) -> JSON:
    """``TaskTemplate.LogDriver`` when ``--log-driver`` was given."""
    if not task.log_driver.name:
        return {}
    driver: JSON = {"Name": task.log_driver.name}
    _put(driver, "Options", _labels(task.log_driver.options))
    return {"LogDriver": driver}


def update_config_shape(update: pb.UpdateConfig) -> JSON:
    shape: JSON = {"Parallelism": int(update.parallelism)}
    _put(shape, "Delay", nanoseconds(update.delay))
    shape["FailureAction"] = _word(pb.UpdateConfig.FailureAction.Name(update.failure_action))
    _put(shape, "Monitor", nanoseconds(update.monitor))
    shape["MaxFailureRatio"] = float(update.max_failure_ratio)
    shape["Order"] = _word(pb.UpdateConfig.Order.Name(update.order))
    return shape


def port_shape(port: pb.PortConfig) -> JSON:
    shape: JSON = {}
    _put(shape, "Name", port.name)
    shape["Protocol"] = pb.PortConfig.Protocol.Name(port.protocol).lower()
    shape["TargetPort"] = int(port.target_port)
    _put(shape, "PublishedPort", int(port.published_port))
    shape["PublishMode"] = pb.PortConfig.PublishMode.Name(port.publish_mode).lower()
    return shape


def endpoint_spec_shape(endpoint: pb.EndpointSpec) -> JSON:
    shape: JSON = {"Mode": pb.EndpointSpec.ResolutionMode.Name(endpoint.mode).lower()}
    _put(shape, "Ports", [port_shape(p) for p in endpoint.ports])
    return shape


def service_spec_shape(spec: pb.ServiceSpec) -> JSON:
    shape: JSON = {"Name": spec.annotations.name, "Labels": _labels(spec.annotations.labels)}
    shape["TaskTemplate"] = task_spec_shape(spec.task)
    networks = []
    for config in spec.networks:  # docker's CLI sends them in TaskTemplate.Networks
        network: JSON = {"Target": config.target}
        _put(network, "Aliases", list(config.aliases))
        networks.append(network)
    _put(shape["TaskTemplate"], "Networks", networks)
    shape["Mode"] = mode_shape(spec)
    shape["UpdateConfig"] = update_config_shape(spec.update)
    shape["RollbackConfig"] = update_config_shape(spec.rollback)
    shape["EndpointSpec"] = endpoint_spec_shape(spec.endpoint)
    return shape


def mode_shape(spec: pb.ServiceSpec) -> JSON:
    """``Spec.Mode``: ``Replicated``, ``Global``, ``ReplicatedJob`` or ``GlobalJob``."""
    mode = spec.WhichOneof("mode")
    if mode == "global":
        return {"Global": {}}
    if mode == "global_job":
        return {"GlobalJob": {}}
    if mode == "replicated_job":
        job = spec.replicated_job
        return {
            "ReplicatedJob": {
                "MaxConcurrent": int(job.max_concurrent),
                "TotalCompletions": int(job.total_completions),
            }
        }
    return {"Replicated": {"Replicas": int(spec.replicated.replicas)}}


def update_status_shape(status: pb.UpdateStatus) -> JSON:
    shape: JSON = {"State": pb.UpdateStatus.UpdateState.Name(status.state).lower()}
    if status.started_at:
        shape["StartedAt"] = rfc3339(status.started_at)
    if status.completed_at:
        shape["CompletedAt"] = rfc3339(status.completed_at)
    shape["Message"] = status.message
    return shape


def service_shape(service: pb.Service) -> JSON:
    """``GET /services/{id}``: Docker's ``swarm.Service``."""
    shape = _meta(service.id, service.meta)
    shape["Spec"] = service_spec_shape(service.spec)
    if service.HasField("previous_spec"):
        shape["PreviousSpec"] = service_spec_shape(service.previous_spec)
    allocated_for = service.endpoint.spec if service.HasField("endpoint") else service.spec.endpoint
    endpoint: JSON = {"Spec": endpoint_spec_shape(allocated_for)}
    _put(endpoint, "Ports", [port_shape(p) for p in service.endpoint.ports])
    _put(
        endpoint,
        "VirtualIPs",
        [{"NetworkID": vip.network_id, "Addr": vip.addr} for vip in service.endpoint.virtual_ips],
    )
    shape["Endpoint"] = endpoint
    if service.update_status.state != pb.UpdateStatus.UNKNOWN:
        shape["UpdateStatus"] = update_status_shape(service.update_status)
    if service.HasField("job_status"):
        shape["JobStatus"] = {
            "JobIteration": {"Index": int(service.job_status.job_iteration)},
            "LastExecution": rfc3339(service.job_status.last_execution),
        }
    return shape


# ---------------------------------------------------------------------------- node


def node_shape(node: pb.Node) -> JSON:
    """``GET /nodes/{id}``: Docker's ``swarm.Node`` (``ManagerStatus`` only for a manager)."""
    shape = _meta(node.id, node.meta)
    spec: JSON = {}
    _put(spec, "Name", node.spec.annotations.name)
    spec["Labels"] = _labels(node.spec.annotations.labels)
    spec["Role"] = pb.NodeSpec.Role.Name(node.spec.desired_role).lower()
    spec["Availability"] = pb.NodeSpec.Availability.Name(node.spec.availability).lower()
    shape["Spec"] = spec
    description = node.description
    engine: JSON = {"EngineVersion": description.engine.engine_version}
    _put(engine, "Labels", _labels(description.engine.labels))
    shape["Description"] = {
        "Hostname": description.hostname,
        "Platform": {"Architecture": description.platform.arch, "OS": description.platform.os},
        "Resources": {
            "NanoCPUs": int(description.resources.nano_cpus),
            "MemoryBytes": int(description.resources.memory_bytes),
            **_generic_resources(description.resources),
        },
        "Engine": engine,
    }
    status: JSON = {"State": pb.NodeStatus.State.Name(node.status.state).lower()}
    _put(status, "Message", node.status.message)
    status["Addr"] = node.status.addr
    shape["Status"] = status
    if node.role == pb.NodeSpec.MANAGER:
        manager: JSON = {}
        _put(manager, "Leader", node.manager_status.leader)
        manager["Reachability"] = pb.ManagerStatus.Reachability.Name(node.manager_status.reachability).lower()
        manager["Addr"] = node.manager_status.addr
        shape["ManagerStatus"] = manager
    return shape


# ---------------------------------------------------------------------------- task


def task_state_word(state: int) -> str:
    """A task state as the Engine API spells it (``running``, ``shutdown``)."""
    return str(pb.TaskState.Name(state)).lower()  # type: ignore[arg-type]


def task_shape(task: pb.Task) -> JSON:
    """``GET /tasks/{id}``: Docker's ``swarm.Task``."""
    shape = _meta(task.id, task.meta)
    shape["Labels"] = _labels(task.annotations.labels)
    shape["Spec"] = task_spec_shape(task.spec)
    shape["ServiceID"] = task.service_id
    _put(shape, "Slot", int(task.slot))
    _put(shape, "NodeID", task.node_id)
    if task.job_iteration:
        shape["JobIteration"] = {"Index": int(task.job_iteration)}
    status: JSON = {
        "Timestamp": rfc3339(task.status.timestamp),
        "State": task_state_word(task.status.state),
        "Message": task.status.message,
    }
    _put(status, "Err", task.status.err)
    if task.status.HasField("container"):
        status["ContainerStatus"] = {
            "ContainerID": task.status.container.container_id,
            "PID": int(task.status.container.pid),
            "ExitCode": int(task.status.container.exit_code),
        }
    status["PortStatus"] = (
        {"Ports": [port_shape(p) for p in task.endpoint.ports]} if task.endpoint.ports else {}
    )
    shape["Status"] = status
    shape["DesiredState"] = task_state_word(task.desired_state)
    _put(
        shape,
        "NetworksAttachments",
        [{"Network": network_shape(a.network), "Addresses": list(a.addresses)} for a in task.networks],
    )
    return shape


# ---------------------------------------------------------------------------- network


def network_shape(network: pb.Network) -> JSON:
    """Docker's ``swarm.Network``: a network as the swarm API shows it inside a task's
    ``NetworksAttachments`` (``network inspect`` prints the networking API's shape instead)."""
    shape = _meta(network.id, network.meta)
    driver = network.spec.driver or "overlay"
    requested: JSON = {}
    _put(requested, "Subnet", network.spec.ipam.subnet)
    _put(requested, "Gateway", network.spec.ipam.gateway)
    spec: JSON = {
        "Name": network.spec.annotations.name,
        "Labels": _labels(network.spec.annotations.labels),
        "DriverConfiguration": {"Name": driver},
    }
    _put(spec, "Ingress", network.spec.ingress)
    _put(spec, "Attachable", network.spec.attachable)
    spec["IPAMOptions"] = {"Driver": {}, "Configs": [requested] if requested else []}
    spec["Scope"] = "swarm"
    shape["Spec"] = spec
    options = {"com.docker.network.driver.overlay.vxlanid_list": str(network.vni)} if network.vni else {}
    shape["DriverState"] = {"Name": driver, "Options": options | _labels(network.spec.driver_opts)}
    allocated: JSON = {}
    _put(allocated, "Subnet", network.allocated.subnet)
    _put(allocated, "Gateway", network.allocated.gateway)
    shape["IPAMOptions"] = {"Driver": {"Name": "default"}, "Configs": [allocated] if allocated else []}
    return shape


# ---------------------------------------------------------------------------- secret, config


def secret_shape(secret: pb.Secret, default_driver: str = "") -> JSON:
    """``GET /secrets/{id}``: name, labels and driver; never ``Data`` (docker never returns it)."""
    shape = _meta(secret.id, secret.meta)
    spec: JSON = {"Name": secret.spec.annotations.name, "Labels": _labels(secret.spec.annotations.labels)}
    driver = secret.spec.driver or default_driver
    if driver:
        spec["Driver"] = {"Name": driver}
    shape["Spec"] = spec
    return shape


def config_shape(config: pb.Config) -> JSON:
    """``GET /configs/{id}``: a config's data is not sensitive and is returned base64, as docker."""
    shape = _meta(config.id, config.meta)
    shape["Spec"] = {
        "Name": config.spec.annotations.name,
        "Labels": _labels(config.spec.annotations.labels),
        "Data": base64.b64encode(config.spec.data).decode(),
    }
    return shape


# ---------------------------------------------------------------------------- swarm


def swarm_shape(cluster: pb.Cluster) -> JSON:
    """``GET /swarm``: Docker's ``swarm.Swarm`` (settings of ``swarm init``/``swarm update``,
    the CA's certificate and the join tokens; never a key)."""
    spec = cluster.spec
    ca_config: JSON = {"NodeCertExpiry": nanoseconds(spec.ca_config.node_cert_expiry)}
    _put(
        ca_config,
        "ExternalCAs",
        [
            {
                "Protocol": ca.protocol,
                "URL": ca.url,
                **({"Options": _labels(ca.options)} if ca.options else {}),
            }
            for ca in spec.ca_config.external_cas
        ],
    )
    return {
        **_meta(cluster.id, cluster.meta),
        "Spec": {
            "Name": spec.annotations.name,
            "Labels": _labels(spec.annotations.labels),
            "Orchestration": {
                "TaskHistoryRetentionLimit": int(spec.orchestration.task_history_retention_limit)
            },
            "Raft": {
                "SnapshotInterval": int(spec.raft.snapshot_interval),
                "KeepOldSnapshots": int(spec.raft.keep_old_snapshots),
                "ElectionTick": int(spec.raft.election_tick),
                "HeartbeatTick": int(spec.raft.heartbeat_tick),
            },
            "Dispatcher": {"HeartbeatPeriod": nanoseconds(spec.dispatcher.heartbeat_period)},
            "CAConfig": ca_config,
            "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": spec.encryption_config.auto_lock_managers},
        },
        "TLSInfo": {"TrustRoot": cluster.root_ca.ca_cert.decode(errors="replace")},
        "RootRotationInProgress": False,
        "DefaultAddrPool": list(cluster.default_address_pool) or ["10.0.0.0/8"],
        "SubnetSize": int(cluster.subnet_size or 24),
        "JoinTokens": {
            "Worker": cluster.root_ca.join_tokens.worker,
            "Manager": cluster.root_ca.join_tokens.manager,
        },
    }
