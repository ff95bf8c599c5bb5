"""The public API for plugin authors: everything a plugin may import from shoal, in one place.

A plugin imports kernel names from here (``from shoal.plugin import hookimpl, PluginContext``)
and its conformance suite from ``shoal.testing.<role>``. Every other ``shoal.*`` module is the
kernel's own business and may change in any release without notice.

Stability promise:

* **Role API versions** (``API_VERSIONS``): a change to what the kernel calls on a role's
  provider or passes to it (a method added, removed or renamed, an argument or return type
  changed, a meaning changed) bumps that role's major version; the loader then refuses
  providers that declare the old one, with one line saying so. Nothing a provider of the
  current version relies on changes without such a bump. The role's data types (for example
  ``RootMaterial``, ``NodeInfo``, ``TaskFile``) and its errors (for example ``NetworkError``,
  ``StoreOpenError``, ``SecretFetchError``) belong to their role's version.
* **Kernel-wide names** (``hookimpl``, ``PluginContext``, ``Provider``, ``RPCError`` and
  ``StatusCode``, the object model ``objects_pb2``, the placement library): new names and new
  optional fields may be added in any release; removing or changing one bumps every role API
  version that exposes it. Protobuf fields of ``objects_pb2`` are only ever added.
* **Not covered**: anything not in ``__all__`` below, including ``shoal.loader``, the daemon,
  the manager and the CLI. Two helper modules are used by the shipped plugins and documented
  in the plugin guide but carry no promise beyond the kernel's own version: ``shoal.identity``
  (certificate parsing and chain checks, so CA and transport plugins read identities the way
  the kernel does) and ``shoal.runtimekit`` (helpers for container-engine runtimes).

Errors a plugin raises: ``ValueError`` for bad options or input (one line, it reaches the
operator as is), ``RuntimeError`` for a backend that cannot serve now; each role defines its
own where the kernel must tell one failure from another (``NetworkError``, ``RuntimeError_``,
``SecretFetchError``, ``StoreOpenError``, ``StoreUnavailable``/``NotLeaderError``/
``MemberRemoved``, a transport's ``RPCError``). A CA's ``create_root`` may raise anything:
the kernel stops ``swarm init`` with one line naming the plugin, its distribution and the
method.
"""

from __future__ import annotations

from shoal.hookspecs import hookimpl
from shoal.placement import (
    CONSTRAINT_KEYS,
    Constraint,
    Filter,
    Pipeline,
    Preference,
    batch_key,
    group_batches,
    parse_constraint,
    parse_constraints,
    parse_preference,
)
from shoal.proto import objects_pb2
from shoal.roles import (
    API_VERSIONS,
    CLUSTER_ROLES,
    NODE_ROLES,
    ROLES,
    STORE_PEER_METHOD_PREFIX,
    AtRestSealer,
    CAProvider,
    ContainerRef,
    EngineInfo,
    ExitStatus,
    ExternalCA,
    Handler,
    IssuedCertificate,
    LogLine,
    MemberInfo,
    MemberRemoved,
    NetworkError,
    NetworkProvider,
    NodeInfo,
    NotLeaderError,
    PeerIdentity,
    Placement,
    PluginContext,
    Provider,
    RegistryAuth,
    RootMaterial,
    RPCError,
    RuntimeError_,
    RuntimeProvider,
    SchedulerProvider,
    SecretFetchError,
    SecretsProvider,
    SecretUse,
    StateMachine,
    StatusCode,
    StoreOpenError,
    StoreProvider,
    StoreUnavailable,
    StreamHandler,
    TaskFile,
    TLSMaterial,
    TransportProvider,
    TransportServer,
)
from shoal.roles.ca import EXTERNAL_CA_PROTOCOLS_ATTR, external_ca_protocols
from shoal.roles.leadership import LeadershipFeed
from shoal.roles.network import (
    FEATURE_DISCOVERY,
    FEATURE_INGRESS,
    FEATURE_OVERLAY,
    FEATURES,
    Backend,
    EndpointAttachment,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)
from shoal.roles.runtime import (
    DEFAULT_STOP_GRACE_SECONDS,
    ENGINE_CONCURRENCY_ATTR,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    SECRETS_DIR,
    TASK_LABELS,
    declared_engine_concurrency,
)

__all__ = [
    "API_VERSIONS",
    "CLUSTER_ROLES",
    "CONSTRAINT_KEYS",
    "DEFAULT_STOP_GRACE_SECONDS",
    "ENGINE_CONCURRENCY_ATTR",
    "EXTERNAL_CA_PROTOCOLS_ATTR",
    "FEATURES",
    "FEATURE_DISCOVERY",
    "FEATURE_INGRESS",
    "FEATURE_OVERLAY",
    "LABEL_NODE_ID",
    "LABEL_SERVICE_ID",
    "LABEL_SERVICE_NAME",
    "LABEL_SLOT",
    "LABEL_TASK_ID",
    "NODE_ROLES",
    "ROLES",
    "SECRETS_DIR",
    "STORE_PEER_METHOD_PREFIX",
    "TASK_LABELS",
    "AtRestSealer",
    "Backend",
    "CAProvider",
    "Constraint",
    "ContainerRef",
    "EndpointAttachment",
    "EngineInfo",
    "ExitStatus",
    "ExternalCA",
    "Filter",
    "Handler",
    "IssuedCertificate",
    "LeadershipFeed",
    "LogLine",
    "MemberInfo",
    "MemberRemoved",
    "NetworkError",
    "NetworkProvider",
    "NetworkSpec",
    "NodeInfo",
    "NodeNetwork",
    "NotLeaderError",
    "PeerIdentity",
    "Pipeline",
    "Placement",
    "PluginContext",
    "Preference",
    "Provider",
    "PublishedPort",
    "RPCError",
    "RegistryAuth",
    "RootMaterial",
    "RuntimeError_",
    "RuntimeProvider",
    "SchedulerProvider",
    "SecretFetchError",
    "SecretUse",
    "SecretsProvider",
    "ServiceRecord",
    "StateMachine",
    "StatusCode",
    "StoreOpenError",
    "StoreProvider",
    "StoreUnavailable",
    "StreamHandler",
    "TLSMaterial",
    "TaskFile",
    "TransportProvider",
    "TransportServer",
    "batch_key",
    "declared_engine_concurrency",
    "external_ca_protocols",
    "group_batches",
    "hookimpl",
    "objects_pb2",
    "parse_constraint",
    "parse_constraints",
    "parse_preference",
]
