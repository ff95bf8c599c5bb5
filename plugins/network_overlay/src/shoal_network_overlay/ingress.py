"""The routing mesh's data path on one node: nftables DNAT with ``numgen`` round robin.

Everything lives in one table of shoal's own (``table ip shoal``); the host's other tables are
never read or written. For each published port, a new connection to any local address of the
node (not loopback) is DNATed to one of the port's backends, picked by ``numgen inc mod N``:
connections spread evenly over the running tasks. The table is rewritten whole in one ``nft -f``
transaction on every change (delete and re-create are atomic together), so a backend that
leaves gets no new connection from the moment the call returns, while conntrack keeps every
established connection on the backend it was given. A port with no backend has no rule: a
connection to it is refused like any closed port.

This is the kernel data path chosen for the mesh (no IPVS on this kernel; no user-space
copying). The agent does not drive it yet: the ``overlay`` plugin declares the ``ingress``
feature once tasks on other nodes are reachable too (docs/architecture.md, "Networking").
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.plugin import NetworkError

TABLE = "shoal"
#: Swarm's NAT priority for DNAT (``dstnat``), written as a number: ``output`` hooks refuse
#: the name in nft 1.0.6.
DSTNAT_PRIORITY = -100
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Forward:
    """Connections to ``published``/``protocol`` on the node go to ``target`` on a backend."""

    protocol: str
    published: int
    target: int
    backends: tuple[str, ...]


def _checked(forward: Forward) -> Forward:
    """Only values that cannot change the script's meaning reach nft (no injection)."""
    if forward.protocol not in PROTOCOLS:
        raise NetworkError(f"ingress: protocol {forward.protocol!r} is not tcp or udp")
    for port in (forward.published, forward.target):
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise NetworkError(f"ingress: port {port!r} is not a number from 1 to 65535")
    for address in forward.backends:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise NetworkError(f"ingress: backend address {address!r} is not an IPv4 address") from None
    return forward


def _rule(forward: Forward, *, local_only: bool) -> str:
    choices = ", ".join(f"{i} : {address}" for i, address in enumerate(forward.backends))
    match = "ip daddr != 127.0.0.0/8 " if local_only else ""
    return (
        f"    {match}fib daddr type local {forward.protocol} dport {forward.published} "
        f"dnat to numgen inc mod {len(forward.backends)} map {{ {choices} }} : {forward.target}\n"
    )


def ruleset(forwards: Sequence[Forward]) -> str:
    """The whole ``nft -f`` script: (re)create the table with one rule per port that has
    backends, in the ``prerouting`` (from other hosts) and ``output`` (from this host) hooks."""
    live = sorted((_checked(f) for f in forwards if f.backends), key=lambda f: (f.protocol, f.published))
    chains = ""
    for hook in ("prerouting", "output"):
        rules = "".join(_rule(f, local_only=hook == "output") for f in live)
        chains += (
            f"  chain {hook} {{\n"
            f"    type nat hook {hook} priority {DSTNAT_PRIORITY}; policy accept;\n"
            f"{rules}"
            "  }\n"
        )
    return f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{chains}}}\n"


class IngressTable:
    """Keeps this node's published ports and writes them to its nftables table.

    ``nft`` is the command to run (``nsenter --net=... nft`` puts the table in another network
    namespace, which is how the tests use it).
    """

    def __init__(self, nft: Sequence[str] = ("nft",)) -> None:
        self.nft = tuple(nft)
        self.forwards: dict[tuple[str, int], Forward] = {}

    async def publish(self, forward: Forward) -> None:
        """Set (or replace) one port's backends and rewrite the table."""
        _checked(forward)
        self.forwards[(forward.protocol, forward.published)] = forward
        await self._run(ruleset(list(self.forwards.values())))

    async def unpublish(self, protocol: str, published: int) -> None:
        if self.forwards.pop((protocol, published), None) is not None:
            await self._run(ruleset(list(self.forwards.values())))

    async def remove(self) -> None:
        """Delete the table (missing is fine): what a node leaving must leave behind is nothing."""
        self.forwards.clear()
        await self._run(f"table ip {TABLE}\ndelete table ip {TABLE}\n")

    async def _run(self, script: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.nft,
                "-f",
                "-",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NetworkError(
                f"ingress: cannot run {self.nft[-1]} ({exc.strerror}); install nftables"
            ) from None
        _, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            first = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
            raise NetworkError(f"ingress: nft refused the ruleset: {first}")
