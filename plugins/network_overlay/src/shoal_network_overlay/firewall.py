"""Forwarding through the provider's bridges when dockerd's firewall would drop it.

dockerd sets the ``FORWARD`` policy to ``DROP`` and loads ``br_netfilter``, so even frames bridged
between a task's veth and the VXLAN device pass ``FORWARD``, and so do ingress connections
forwarded into the ingress bridge. Docker's documented hook for other software is the
``DOCKER-USER`` chain (evaluated first): when it exists, the provider inserts ``-i BRIDGE`` and
``-o BRIDGE`` accept rules for each of its bridges, tagged with a comment carrying the node
digest, and removes exactly those (found by the comment, also after a restart). Without
dockerd (no chain) nothing is added: the default policy forwards.
"""

from __future__ import annotations

from shoal.plugin import NetworkError

from shoal_network_overlay.commands import Commands

CHAIN = "DOCKER-USER"


class DockerUserRules:
    def __init__(self, commands: Commands, comment: str) -> None:
        self.commands = commands
        self.comment = comment

    async def _chain_exists(self) -> bool:
        try:
            await self.commands.run("iptables", "-w", "-t", "filter", "-n", "-L", CHAIN)
        except NetworkError:
            return False  # no chain (no dockerd), or no iptables at all: nothing drops forwarding
        return True

    def _rules(self, bridge: str) -> list[list[str]]:
        tag = ["-m", "comment", "--comment", self.comment, "-j", "ACCEPT"]
        return [["-i", bridge, *tag], ["-o", bridge, *tag]]

    async def allow(self, bridge: str) -> None:
        """Accept forwarding in and out of ``bridge`` (idempotent)."""
        if not await self._chain_exists():
            return
        for rule in self._rules(bridge):
            try:
                await self.commands.run("iptables", "-w", "-t", "filter", "-C", CHAIN, *rule)
            except NetworkError:
                await self.commands.run("iptables", "-w", "-t", "filter", "-I", CHAIN, *rule)

    async def forget(self, bridge: str) -> None:
        for rule in self._rules(bridge):
            await self.commands.run("iptables", "-w", "-t", "filter", "-D", CHAIN, *rule, check=False)

    async def remove_all(self) -> None:
        """Delete every rule of this node in the chain (whichever run added it)."""
        if not await self._chain_exists():
            return
        listing = await self.commands.run("iptables", "-w", "-t", "filter", "-S", CHAIN)
        for line in listing.splitlines():
            words = line.split()
            if words[:2] == ["-A", CHAIN] and self.comment in words:
                await self.commands.run("iptables", "-w", "-t", "filter", "-D", *words[1:], check=False)
