"""Service discovery: the resolver each task finds at 127.0.0.11:53 in its own namespace.

Like Docker's embedded DNS, the server's sockets (UDP and TCP) are opened *inside* the task's
network namespace (``namespaces.in_namespace``) and served from the daemon's event loop, so a
task on a user network asks ``127.0.0.11`` (its resolv.conf, written by the runtime) and the
answer comes from the node without any port being opened on the host. Each task's server knows
which networks the task is on and answers only their records (discovery is scoped per network):
``NAME`` gives the service's VIP (or its tasks' addresses in ``dnsrr`` mode, shuffled),
``tasks.NAME`` every running task's address. A known name asked for another type (AAAA) gets an
empty answer. Every other name is forwarded, from the node's namespace, to the nameservers of
the host's resolv.conf (read at each query, so a change applies at once), all asked at once,
the first answer relayed; none within 2 s gives SERVFAIL. Answers carry TTL 0: task sets change
within a second and clients must not keep a dead task's address.

DNS packets are parsed and built with ``dnslib`` (a small, pure-Python, well-used wire codec).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import cast

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from shoal.plugin import NetworkError, ServiceRecord

from shoal_network_overlay.namespaces import bound_socket, in_namespace

log = logging.getLogger(__name__)

ADDRESS = ("127.0.0.11", 53)
FORWARD_TIMEOUT = 2.0
TTL = 0
#: Questions one task may have in flight (UDP) and TCP connections it may hold open: a task
#: flooding its resolver cannot exhaust the daemon's sockets; beyond, a UDP question is dropped
#: (the client retries) and a TCP connection closed.
MAX_IN_FLIGHT = 128
MAX_STREAMS = 16


class Records:
    """What discovery answers, per network (replaced whole by ``set_records``)."""

    def __init__(self) -> None:
        self.by_network: dict[str, tuple[ServiceRecord, ...]] = {}

    def set(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        self.by_network[network_id] = tuple(records)

    def lookup(self, networks: Iterable[str], name: str) -> list[str] | None:
        """The addresses for ``name`` on ``networks``; ``None`` when no network knows it."""
        wanted = name.lower().rstrip(".")
        tasks = wanted.startswith("tasks.")
        service = wanted[len("tasks.") :] if tasks else wanted
        found: list[str] | None = None
        for network_id in networks:
            for record in self.by_network.get(network_id, ()):
                if record.name.lower() != service:
                    continue
                found = [] if found is None else found
                if record.vip and not tasks:
                    addresses = [record.vip]
                else:
                    addresses = list(record.task_addresses)
                    random.shuffle(addresses)
                found += [a.split("/")[0] for a in addresses if a.split("/")[0] not in found]
        return found


class Upstream:
    """The host's resolvers, asked from the node's network namespace."""

    def __init__(self, resolv_conf: Path, netns: str | None) -> None:
        self.resolv_conf = resolv_conf
        self.netns = netns

    def nameservers(self) -> list[str]:
        try:
            lines = self.resolv_conf.read_text().splitlines()
        except OSError:
            return []
        servers = []
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1]:
                servers.append(words[1])
        return servers

    async def ask(self, query: bytes) -> bytes | None:
        """The first answer of any nameserver within the timeout, else ``None``."""
        servers = self.nameservers()
        if not servers:
            return None
        sock = await in_namespace(self.netns, bound_socket(socket.SOCK_DGRAM, ("0.0.0.0", 0)))
        loop = asyncio.get_running_loop()
        try:
            for server in servers:
                with contextlib.suppress(OSError):
                    await loop.sock_sendto(sock, query, (server, 53))
            async with asyncio.timeout(FORWARD_TIMEOUT):
                while True:
                    data, source = await loop.sock_recvfrom(sock, 65535)
                    if source[0] in servers and data[:2] == query[:2]:
                        return data
        except (TimeoutError, OSError):
            return None
        finally:
            sock.close()


class Answerer:
    """Builds the reply to one query for a task on ``networks``."""

    def __init__(self, records: Records, upstream: Upstream) -> None:
        self.records = records
        self.upstream = upstream

    async def reply(self, data: bytes, networks: Iterable[str]) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types on garbage: nothing to answer
            return None
        if not request.questions:
            return None
        question = request.q
        addresses = self.records.lookup(list(networks), str(question.qname))
        if addresses is None:
            forwarded = await self.upstream.ask(data)
            if forwarded is not None:
                return forwarded
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return bytes(reply.pack())
        reply = request.reply()
        if question.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
        return bytes(reply.pack())


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: EndpointResolver) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(self.server.in_flight) < MAX_IN_FLIGHT:
            self.server.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = await self.server.answerer.reply(data, self.server.networks)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class EndpointResolver:
    """The DNS server inside one task's namespace, for the networks the task is on."""

    def __init__(self, sandbox: str, answerer: Answerer) -> None:
        self.sandbox = sandbox
        self.answerer = answerer
        self.networks: set[str] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        """Bind 127.0.0.11:53 (UDP and TCP) in the task's namespace and start serving."""
        loop = asyncio.get_running_loop()
        try:
            udp = await in_namespace(self.sandbox, bound_socket(socket.SOCK_DGRAM, ADDRESS))
        except OSError as exc:
            raise self._refused(exc) from None
        try:
            tcp = await in_namespace(self.sandbox, bound_socket(socket.SOCK_STREAM, ADDRESS))
        except BaseException as exc:
            udp.close()
            raise self._refused(exc) if isinstance(exc, OSError) else exc from None
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), sock=udp)
        self._udp = transport
        self._tcp = await asyncio.start_server(self._stream, sock=tcp)

    def _refused(self, exc: OSError) -> NetworkError:
        return NetworkError(
            f"discovery: cannot listen on {ADDRESS[0]}:{ADDRESS[1]} in {self.sandbox}: {exc.strerror}"
        )

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._streams) >= MAX_STREAMS:
            writer.close()
            return
        self._streams.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await self.answerer.reply(await reader.readexactly(length), self.networks)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._streams.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self.in_flight):
            task.cancel()
        self.in_flight.clear()
        for writer in list(self._streams):
            writer.close()
        self._streams.clear()
