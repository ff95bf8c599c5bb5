"""What every provider shares: its declaration and the context it is built with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from shoal.roles.transport import PeerIdentity, TLSMaterial, TransportProvider

#: Every role, in the order ``shoal plugin ls`` shows them.
ROLES: tuple[str, ...] = ("store", "scheduler", "ca", "runtime", "secrets", "transport", "network")

#: Roles fixed for the whole cluster at ``swarm init`` and recorded in the cluster object.
#: ``network`` is cluster-wide although every node runs it: all nodes must realise the same
#: data path (the same VXLAN and forwarding scheme) for their tasks to reach each other.
CLUSTER_ROLES: tuple[str, ...] = ("store", "scheduler", "ca", "transport", "secrets", "network")

#: Roles each daemon chooses for itself.
NODE_ROLES: tuple[str, ...] = ("runtime",)

#: The role API major version this kernel speaks, per role. A provider declaring another
#: version is refused at load: the kernel would call methods it does not have.
API_VERSIONS: dict[str, int] = {
    "store": 3,
    "scheduler": 2,
    "ca": 2,
    "runtime": 2,
    "secrets": 2,
    "transport": 1,
    "network": 1,
}


@runtime_checkable
class Provider(Protocol):
    """The declaration every provider carries, whatever its role."""

    #: The role this provider fills: one of ``ROLES``.
    role: ClassVar[str]
    #: The role API major version it implements: must equal ``API_VERSIONS[role]``.
    api_version: ClassVar[int]


@runtime_checkable
class AtRestSealer(Protocol):
    """Encrypts what a store writes to disk (``PluginContext.sealer``); the kernel holds the key.

    ``seal`` returns an authenticated ciphertext of ``data`` bound to ``context`` (any bytes the
    caller chooses, for example a record kind or a file header); ``open`` returns the data, or
    raises ``ValueError`` when the bytes were altered, sealed under another key or context.
    """

    def seal(self, data: bytes, context: bytes = b"") -> bytes: ...

    def open(self, blob: bytes, context: bytes = b"") -> bytes: ...


@dataclass
class PluginContext:
    """What a factory hook receives to build its provider.

    ``state_dir`` is a directory private to this plugin on this node (created before the
    hook is called); ``options`` are the ``--plugin-opt ROLE.KEY=VALUE`` settings for this
    role; ``node_id`` is empty until the node has an identity.
    """

    role: str
    name: str
    state_dir: Path
    options: dict[str, str] = field(default_factory=dict)
    node_id: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("shoal.plugin"))
    #: The node's current TLS identity (root, certificate, key), or None before it has one.
    #: An external-CA plugin authenticates to its CA with it (a manager's own certificate).
    node_tls: Callable[[], TLSMaterial | None] = field(default=lambda: None)
    #: The node's transport (mutual TLS with ``node_tls``), or None where the node has none
    #: yet. A store that replicates itself talks to the other managers with it.
    transport: TransportProvider | None = None
    #: Where other nodes reach this node (``host:port``), empty until it is in a swarm.
    advertise_addr: str = ""
    #: Store role only: the manager's data key. A store must encrypt what it writes with it
    #: (every record and snapshot); None when the kernel gives none (tests, other roles).
    sealer: AtRestSealer | None = None
    #: Store role only: the kernel's check of another manager, for a store that carries its
    #: members' messages outside the transport (the Raft store's direct links).
    #: ``authorize_peer(method, peer)`` returns if the kernel would serve ``method`` (a name
    #: under ``STORE_PEER_METHOD_PREFIX``) to ``peer`` now, else raises ``RPCError``
    #: (PERMISSION_DENIED, saying why: not a manager, demoted, removed, another cluster). Call
    #: it before every message, as the kernel does on its streams. None where the kernel gives
    #: none (tests, other roles): such a store then talks only through ``transport``.
    authorize_peer: Callable[[str, PeerIdentity | None], None] | None = None
