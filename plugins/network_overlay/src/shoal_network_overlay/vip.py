"""VIP load balancing inside a task's network namespace.

A service's virtual IP is no device anywhere: inside every local task's namespace on the
service's network, ``table ip shoal_vip`` DNATs new connections to the VIP (any port) to one
of the service's running tasks, picked by ``numgen inc mod N``, in the ``output`` hook (where a
task's own connections start). The table is rewritten whole in one ``nft -f`` transaction on
every ``set_records`` that changes it, so a task that leaves gets no new connection from then
on, and conntrack keeps established connections where they are. A VIP with no running task
refuses connections at once (TCP reset, ICMP for the rest) instead of letting them time out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from shoal.plugin import NetworkError, ServiceRecord

from shoal_network_overlay.names import VIP_TABLE


def plain_ipv4(value: str, what: str) -> str:
    """``10.0.1.5`` from ``10.0.1.5`` or ``10.0.1.5/24``."""
    try:
        return str(ipaddress.IPv4Interface(value).ip)
    except ValueError:
        raise NetworkError(f"discovery: {what} {value!r} is not an IPv4 address") from None


def vip_script(records: Iterable[ServiceRecord]) -> str:
    """The whole table for one namespace, from the records of every network it is on."""
    balance, refuse = [], []
    seen: set[str] = set()
    for record in records:
        if not record.vip:
            continue  # dnsrr: no VIP
        vip = plain_ipv4(record.vip, f"VIP of {record.name}")
        if vip in seen:
            continue
        seen.add(vip)
        tasks = [plain_ipv4(a, f"task address of {record.name}") for a in record.task_addresses]
        if tasks:
            choices = ", ".join(f"{i} : {a}" for i, a in enumerate(tasks))
            balance.append(f"    ip daddr {vip} dnat to numgen inc mod {len(tasks)} map {{ {choices} }}\n")
        else:
            refuse.append(
                f"    ip daddr {vip} meta l4proto tcp reject with tcp reset\n    ip daddr {vip} reject\n"
            )
    return (
        f"table ip {VIP_TABLE}\ndelete table ip {VIP_TABLE}\n"
        f"table ip {VIP_TABLE} {{\n"
        "  chain balance {\n    type nat hook output priority -100; policy accept;\n"
        + "".join(balance)
        + "  }\n  chain refuse {\n    type filter hook output priority 0; policy accept;\n"
        + "".join(refuse)
        + "  }\n}\n"
    )


def remove_script() -> str:
    return f"table ip {VIP_TABLE}\ndelete table ip {VIP_TABLE}\n"
