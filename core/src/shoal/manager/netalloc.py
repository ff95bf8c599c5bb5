"""Address arithmetic for the swarm's networks: subnets from the pools, VXLAN IDs, addresses.

Pure logic on what is already allocated (passed in), so it holds no state of its own: the
manager passes what the store holds, which is why a new leader allocates exactly where the
old one left off (nothing to rebuild but what the objects say). Swarm's rules: the default
pool is 10.0.0.0/8 cut into /24s (``swarm init --default-addr-pool``,
``--default-addr-pool-mask-length``), a subnet given with ``network create --subnet`` must not
overlap any other network's, a network's gateway is its first address unless given, and
VXLAN IDs start at 4096 (swarmkit's overlay driver keeps 1-4095 free).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

DEFAULT_POOL = "10.0.0.0/8"
DEFAULT_SUBNET_SIZE = 24
#: The smallest subnet that still leaves room for a gateway and tasks.
MAX_PREFIX = 29
FIRST_VNI = 4096
LAST_VNI = (1 << 24) - 1

IPv4Net = ipaddress.IPv4Network


class AllocationError(ValueError):
    """Nothing can be allocated, or a request cannot be honoured; the message is one line."""


def parse_subnet(text: str, flag: str = "--subnet") -> IPv4Net:
    """A CIDR such as ``10.10.0.0/24`` (IPv4, host bits zero), or a one-line error."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        if "/" in text:
            try:
                loose = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                loose = None
            if loose is not None:
                raise AllocationError(
                    f'invalid {flag} "{text}": host bits are set; did you mean {loose}?'
                ) from None
        raise AllocationError(f'invalid {flag} "{text}": give an IPv4 CIDR such as 10.10.0.0/24') from None
    if not isinstance(net, IPv4Net):
        raise AllocationError(f'invalid {flag} "{text}": only IPv4 subnets are supported')
    if net.prefixlen > MAX_PREFIX:
        raise AllocationError(f'invalid {flag} "{text}": the smallest subnet is a /{MAX_PREFIX}')
    return net


def parse_pools(pools: Sequence[str], subnet_size: int | None) -> tuple[list[str], int]:
    """``swarm init --default-addr-pool`` (repeatable) and ``--default-addr-pool-mask-length``,
    checked: every pool a CIDR, no two overlapping, and the size no larger than any pool."""
    size = DEFAULT_SUBNET_SIZE if subnet_size is None else subnet_size
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PREFIX:
        raise AllocationError(
            f'invalid --default-addr-pool-mask-length "{subnet_size}": give a prefix length from 1 to {MAX_PREFIX}'
        )
    nets = [parse_subnet(p, "--default-addr-pool") for p in pools] or [IPv4Net(DEFAULT_POOL)]
    for i, net in enumerate(nets):
        if size < net.prefixlen:
            raise AllocationError(
                f"invalid --default-addr-pool-mask-length {size}: pool {net} is smaller than a /{size}; "
                f"use a length of at least {net.prefixlen}"
            )
        for other in nets[:i]:
            if net.overlaps(other):
                raise AllocationError(f"invalid --default-addr-pool: {net} overlaps {other}")
    return [str(n) for n in nets], size


def pool_subnets(pools: Sequence[str], subnet_size: int) -> Iterator[IPv4Net]:
    """Every subnet the pools hold, in order (lazily: a /8 holds 65536 /24s)."""
    for pool in pools or [DEFAULT_POOL]:
        yield from IPv4Net(pool).subnets(new_prefix=subnet_size or DEFAULT_SUBNET_SIZE)


def next_subnet(pools: Sequence[str], subnet_size: int, used: Iterable[IPv4Net]) -> IPv4Net:
    """The first pool subnet that overlaps none of ``used``."""
    taken = sorted(used, key=lambda n: (int(n.network_address), n.prefixlen))
    for candidate in pool_subnets(pools, subnet_size):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise AllocationError(
        "the address pools are full: remove unused networks, or give a subnet with --subnet"
    )


def check_subnet(subnet: IPv4Net, used: Iterable[tuple[str, IPv4Net]]) -> None:
    """Refuse a ``--subnet`` that overlaps another network's (named in the message)."""
    for name, net in used:
        if subnet.overlaps(net):
            raise AllocationError(
                f'subnet {subnet} overlaps subnet {net} of network "{name}": choose a subnet that does not'
            )


def gateway_for(subnet: IPv4Net, requested: str = "") -> str:
    """The network's gateway: ``requested`` (checked to be a host of the subnet) or its first
    address."""
    if not requested:
        return str(subnet.network_address + 1)
    try:
        gateway = ipaddress.IPv4Address(requested.strip())
    except ValueError:
        raise AllocationError(f'invalid --gateway "{requested}": give an IPv4 address') from None
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise AllocationError(f"invalid --gateway {gateway}: it is not a host address of subnet {subnet}")
    return str(gateway)


def next_vni(used: Iterable[int]) -> int:
    """The lowest free VXLAN ID from 4096."""
    taken = set(used)
    vni = FIRST_VNI
    while vni in taken:
        vni += 1
    if vni > LAST_VNI:
        raise AllocationError("no free VXLAN ID left: remove unused networks")
    return vni


@dataclass
class AddressBook:
    """The addresses of one network: which are used, and the next free one.

    ``used`` holds plain addresses (the gateway is always used). Allocation takes the lowest
    free host address, so a network's addresses stay compact and predictable in tests.
    """

    subnet: IPv4Net
    gateway: str
    used: set[str]
    _cursor: int = 0

    @classmethod
    def of(cls, subnet: str, gateway: str, used: Iterable[str]) -> AddressBook:
        net = IPv4Net(subnet)
        plain = {address.split("/", 1)[0] for address in used}
        plain.add(gateway)
        return cls(net, gateway, plain)

    def take(self) -> str:
        """A free address in CIDR form (``10.0.1.5/24``), now marked used."""
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        number = max(first, self._cursor)
        while number <= last:
            address = str(ipaddress.IPv4Address(number))
            if address not in self.used:
                self.used.add(address)
                self._cursor = number + 1
                return f"{address}/{self.subnet.prefixlen}"
            number += 1
        raise AllocationError(
            f"network subnet {self.subnet} has no free address left: "
            "remove tasks or services from it, or use a network with a larger subnet"
        )

    def holds(self, address: str) -> bool:
        """Whether ``address`` (plain or CIDR) is one of this network's hosts."""
        try:
            plain = ipaddress.IPv4Address(address.split("/", 1)[0])
        except ValueError:
            return False
        return plain in self.subnet
