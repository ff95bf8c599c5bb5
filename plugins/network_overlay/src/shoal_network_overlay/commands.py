"""Running the host's networking tools (``ip``, ``bridge``, ``nft``, ``iptables``, ``sysctl``).

iproute2 and nftables are the kernel's own userland, kept by the kernel's maintainers; every
change to a ruleset goes through ``nft -f`` as one atomic transaction. ``netns`` runs every
command in another network namespace (``nsenter --net=PATH``): the tests' nodes are namespaces,
and so may be a daemon's node when it runs inside one. A failure is one ``NetworkError`` line
naming the tool and the kernel's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shoal.plugin import NetworkError

#: Debian package of each tool, for the message when one is missing.
PACKAGES = {
    "ip": "iproute2",
    "bridge": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "sysctl": "procps",
    "nsenter": "util-linux",
}


def namespace_prefix(netns: str | None) -> tuple[str, ...]:
    return ("nsenter", f"--net={netns}") if netns else ()


class Commands:
    """Runs tools in the node's network namespace (``netns``, default: this process's)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.prefix = namespace_prefix(netns)

    async def run(
        self, *argv: str, stdin: str | None = None, check: bool = True, netns: str | None = None
    ) -> str:
        """Run ``argv`` (in ``netns`` when given, else the node's namespace); its stdout."""
        prefix = namespace_prefix(netns) if netns else self.prefix
        return await run(argv, prefix=prefix, stdin=stdin, check=check)


async def run(
    argv: Sequence[str], *, prefix: Sequence[str] = (), stdin: str | None = None, check: bool = True
) -> str:
    tool = argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        package = PACKAGES.get(tool, tool)
        raise NetworkError(f"cannot run {tool} ({exc.strerror}): install {package}") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        first = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise NetworkError(f"{' '.join(argv[:3])} failed: {first}")
    return out.decode(errors="replace")
