"""A task's endpoint announces itself on its network (gratuitous ARP).

Task addresses are reused (a replacement often gets the address of the task it replaces) and
task MACs are derived from their addresses (``mac_for``, as Docker's overlay does), so the
neighbour caches of the other tasks stay right. What still points at the old place are the
bridges' and VXLAN devices' learned entries (the MAC was behind another node, or another
port): one gratuitous ARP request from the new endpoint, flooded to every node, moves them at
once instead of after the entries age out (minutes), so the replacement is reachable as soon
as it is attached. Sent from a packet socket opened in the container's namespace.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from shoal_network_overlay.namespaces import in_namespace

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def mac_for(address: str) -> str:
    """The endpoint's MAC: ``02:73`` (locally administered) and the IPv4 address's bytes."""
    packed = ipaddress.IPv4Interface(address).ip.packed
    return "02:73:" + ":".join(f"{byte:02x}" for byte in packed)


def gratuitous_arp(mac: str, address: str) -> bytes:
    """An Ethernet frame: ARP request from ``address`` for ``address``, to everyone."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = ipaddress.IPv4Interface(address).ip.packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, ip, b"\x00" * 6, ip)
    return BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp


async def announce(sandbox: str, interface: str, mac: str, address: str) -> None:
    """Send the gratuitous ARP on ``interface`` inside ``sandbox`` (best effort: a lost frame
    only delays learning until the task's first packet)."""

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
            sock.bind((interface, 0))
            sock.send(gratuitous_arp(mac, address))

    try:
        await in_namespace(sandbox, send)
    except OSError:
        pass
