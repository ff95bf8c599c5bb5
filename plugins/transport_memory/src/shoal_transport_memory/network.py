"""The simulated network: who listens where, which calls are in flight, and what goes wrong.

Everything a simulation wants to control lives on one ``MemoryNetwork`` object so that a test
(or a whole-cluster simulation) can partition nodes, crash servers and inject drops, duplicates
and delays, and get the same run back from the same seed: every random decision is drawn from
``network.rng`` (a ``random.Random``) in call order, and delays are ``asyncio.sleep`` on the
running loop's clock, so a loop with virtual time gets virtual delays.

Addresses are plain strings (``host:port``); hosts need not resolve (``manager-1:2377`` is
fine). A node is on a side of a partition by its address: a caller's addresses are those of
the servers its transport serves plus the transport's optional ``name``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from shoal.plugin import RPCError, StatusCode

if TYPE_CHECKING:
    from shoal_transport_memory.server import MemoryServer

#: Where ``host:0`` starts picking ports (the usual ephemeral range).
FIRST_EPHEMERAL_PORT = 49152
LAST_PORT = 65535


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as its parts; ``ValueError`` naming the address when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > LAST_PORT:
        raise ValueError(f"memory transport: invalid listen address {address!r}, expected HOST:PORT")
    return host, int(port)


class Link:
    """One delivery in flight from a caller to a server, which the network can cut.

    Cutting runs the caller-side ``on_cut`` first (so the caller fails at once even if the
    handler ignores cancellation, as a real peer would see a reset), then cancels the handler.
    """

    def __init__(
        self,
        sources: frozenset[str],
        target: str,
        server: MemoryServer,
        owner: object,
        on_cut: Callable[[RPCError], None] | None = None,
    ) -> None:
        self.sources = sources
        self.target = target
        self.server = server
        self.owner = owner
        self.task: asyncio.Task[None] | None = None
        self._on_cut = on_cut
        self.error: RPCError | None = None

    def cut(self, error: RPCError) -> None:
        if self.error is not None:
            return
        self.error = error
        if self._on_cut is not None:
            self._on_cut(error)
        if self.task is not None:
            self.task.cancel()


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"memory network: {name} must be between 0 and 1, got {value}")
    return float(value)


class MemoryNetwork:
    """A process-wide address space with fault injection. See the module docstring."""

    def __init__(
        self,
        seed: int = 0,
        *,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        #: Every fault decision comes from here; ``rng.seed(n)`` replays a run.
        self.rng = random.Random(seed)
        self._drop_rate = _check_rate("drop_rate", drop_rate)
        self._duplicate_rate = _check_rate("duplicate_rate", duplicate_rate)
        self._delay = (0.0, 0.0)
        self.delay = delay
        self._servers: dict[str, MemoryServer] = {}
        self._next_port = FIRST_EPHEMERAL_PORT
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._down: set[str] = set()
        # Insertion-ordered (not a set): cutting in a fixed order keeps runs reproducible.
        self._links: dict[Link, None] = {}
        #: What happened, for assertions: ``calls``, ``refused``, ``dropped``, ``duplicated``, ``cut``.
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ fault knobs

    @property
    def drop_rate(self) -> float:
        """Probability that a request (or, separately, its response) is lost on the wire."""
        return self._drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        self._drop_rate = _check_rate("drop_rate", value)

    @property
    def duplicate_rate(self) -> float:
        """Probability that a unary request reaches the handler twice (the caller sees one reply)."""
        return self._duplicate_rate

    @duplicate_rate.setter
    def duplicate_rate(self, value: float) -> None:
        self._duplicate_rate = _check_rate("duplicate_rate", value)

    @property
    def delay(self) -> tuple[float, float]:
        """``(min, max)`` seconds each message spends on the wire, drawn uniformly."""
        return self._delay

    @delay.setter
    def delay(self, value: tuple[float, float]) -> None:
        low, high = value
        if not 0.0 <= low <= high:
            raise ValueError(f"memory network: delay must be (min, max) with 0 <= min <= max, got {value}")
        self._delay = (float(low), float(high))

    def reset(self) -> None:
        """No faults at all: heal partitions, bring every address up, zero the rates."""
        self.heal()
        self._down.clear()
        self._drop_rate = self._duplicate_rate = 0.0
        self._delay = (0.0, 0.0)

    # ------------------------------------------------------------------ random draws

    def draw_drop(self) -> bool:
        if self._drop_rate and self.rng.random() < self._drop_rate:
            self.stats["dropped"] += 1
            return True
        return False

    def draw_duplicate(self) -> bool:
        if self._duplicate_rate and self.rng.random() < self._duplicate_rate:
            self.stats["duplicated"] += 1
            return True
        return False

    async def wire_delay(self) -> None:
        """Sleep for one message's transit time (nothing when no delay is configured)."""
        low, high = self._delay
        if high > 0.0:
            await asyncio.sleep(self.rng.uniform(low, high))

    # ------------------------------------------------------------------ partitions and crashes

    def partition(self, a_addrs: Iterable[str], b_addrs: Iterable[str]) -> None:
        """Cut every path between the two groups (adds to partitions already in force).

        Calls in flight across the new cut fail ``UNAVAILABLE`` at once.
        """
        a, b = frozenset(a_addrs), frozenset(b_addrs)
        if a & b:
            raise ValueError(f"memory network: an address cannot be on both sides: {sorted(a & b)}")
        self._partitions.append((a, b))
        self._cut_where(
            lambda link: self._crossing(link.sources, link.target) is not None, "connection reset"
        )

    def heal(self) -> None:
        """Remove every partition (addresses set down stay down)."""
        self._partitions.clear()

    def set_down(self, addr: str, down: bool) -> None:
        """Crash (``True``) or revive an address: nothing reaches it and it reaches nothing.

        Crashing cuts every call in flight to or from it, cancelling its handlers.
        """
        if down:
            self._down.add(addr)
            self._cut_where(
                lambda link: link.target == addr or addr in link.sources, "connection reset (peer down)"
            )
        else:
            self._down.discard(addr)

    def is_down(self, addr: str) -> bool:
        return addr in self._down

    def _crossing(self, sources: frozenset[str], target: str) -> str | None:
        for a, b in self._partitions:
            if (target in a and sources & b) or (target in b and sources & a):
                return "network partition"
        return None

    def blocked(self, sources: frozenset[str], target: str) -> str | None:
        """Why a caller with these addresses cannot reach ``target`` now, or None."""
        if target in self._down:
            return f"connection refused ({target} is down)"
        down = sorted(sources & self._down)
        if down:
            return f"network unreachable (caller {down[0]} is down)"
        crossing = self._crossing(sources, target)
        return f"connection refused ({crossing})" if crossing else None

    def _cut_where(self, predicate: Callable[[Link], bool], reason: str) -> None:
        for link in [link for link in self._links if predicate(link)]:
            self.stats["cut"] += 1
            link.cut(RPCError(StatusCode.UNAVAILABLE, f"cannot reach {link.target}: {reason}"))

    # ------------------------------------------------------------------ links

    def open_link(self, link: Link) -> None:
        self._links[link] = None

    def close_link(self, link: Link) -> None:
        self._links.pop(link, None)

    def links(self, predicate: Callable[[Link], bool]) -> list[Link]:
        return [link for link in self._links if predicate(link)]

    # ------------------------------------------------------------------ address registry

    def bind(self, listen_addr: str, server: MemoryServer) -> str:
        """Register ``server`` at ``listen_addr``; port 0 picks a fresh one. Returns the address."""
        host, port = split_address(listen_addr)
        if port == 0:
            address = self._fresh_address(host)
        else:
            address = listen_addr
            if address in self._servers:
                raise OSError(f"memory transport: cannot listen on {address}: address in use")
        self._servers[address] = server
        return address

    def _fresh_address(self, host: str) -> str:
        for _ in range(LAST_PORT - FIRST_EPHEMERAL_PORT + 1):
            port = self._next_port
            self._next_port = port + 1 if port < LAST_PORT else FIRST_EPHEMERAL_PORT
            address = f"{host}:{port}"
            if address not in self._servers:
                return address
        raise OSError(f"memory transport: cannot listen on {host}:0: no free port left")

    def unbind(self, address: str, server: MemoryServer) -> None:
        if self._servers.get(address) is server:
            del self._servers[address]

    def lookup(self, address: str) -> MemoryServer | None:
        return self._servers.get(address)


#: The network the ``memory`` plugin uses unless a ``MemoryTransport`` is given another.
NETWORK = MemoryNetwork()
