"""The seven roles a plugin can fill, as typed provider protocols.

Each role has one factory hook in ``shoal.hookspecs`` that returns an object satisfying the
protocol below. Providers declare ``role`` (the role name) and ``api_version`` (the major
version of the role API they were written against); the loader refuses a provider whose role
or version does not match (see ``API_VERSIONS``). Provider methods are ``async`` and called
directly by the kernel: pluggy is used only to build providers, never on the hot path.
"""

from __future__ import annotations

from shoal.roles.base import (
    API_VERSIONS,
    CLUSTER_ROLES,
    NODE_ROLES,
    ROLES,
    AtRestSealer,
    PluginContext,
    Provider,
)
from shoal.roles.ca import CAProvider, ExternalCA, IssuedCertificate, RootMaterial
from shoal.roles.network import NetworkError, NetworkProvider
from shoal.roles.runtime import (
    ContainerRef,
    EngineInfo,
    ExitStatus,
    LogLine,
    RegistryAuth,
    RuntimeError_,
    RuntimeProvider,
    TaskFile,
)
from shoal.roles.scheduler import NodeInfo, Placement, SchedulerProvider
from shoal.roles.secrets import SecretFetchError, SecretsProvider, SecretUse
from shoal.roles.store import (
    STORE_PEER_METHOD_PREFIX,
    MemberInfo,
    MemberRemoved,
    NotLeaderError,
    StateMachine,
    StoreOpenError,
    StoreProvider,
    StoreUnavailable,
)
from shoal.roles.transport import (
    Handler,
    PeerIdentity,
    RPCError,
    StatusCode,
    StreamHandler,
    TLSMaterial,
    TransportProvider,
    TransportServer,
)

__all__ = [
    "API_VERSIONS",
    "CLUSTER_ROLES",
    "NODE_ROLES",
    "ROLES",
    "STORE_PEER_METHOD_PREFIX",
    "AtRestSealer",
    "CAProvider",
    "ContainerRef",
    "EngineInfo",
    "ExitStatus",
    "ExternalCA",
    "Handler",
    "IssuedCertificate",
    "LogLine",
    "MemberInfo",
    "MemberRemoved",
    "NetworkError",
    "NetworkProvider",
    "NodeInfo",
    "NotLeaderError",
    "PeerIdentity",
    "Placement",
    "PluginContext",
    "Provider",
    "RPCError",
    "RegistryAuth",
    "RootMaterial",
    "RuntimeError_",
    "RuntimeProvider",
    "SchedulerProvider",
    "SecretFetchError",
    "SecretUse",
    "SecretsProvider",
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
]
