"""gRPC's wake-up socket: a busy loop must not get only one gRPC event per turn (``wakeups``).

The set-up: a plain gRPC server in another process answers ``CALLS`` calls only once it holds
them all, while this process's loop is held (as a busy manager's is). The answers' completion
events pile up behind gRPC's wake-up socket. Then the loop turns are counted until every call
has its answer, each turn a busy one (``TURN``): with the blocking socket gRPC leaves, each turn's read lets its poller thread
queue about one more event, so it takes hundreds of turns; with ``wakeups.unblock`` every
event is queued at once and a few turns do, and one wake takes every waiting byte.
"""

from __future__ import annotations

import asyncio
import fcntl
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator

import grpc
import pytest
from shoal_transport_grpc import wakeups

CALLS = 1000
#: How long each counted loop turn takes (a busy loop's turn).
TURN = 0.005
DEADLINE = 30.0

_SERVER = r"""
import asyncio, sys, grpc

CALLS = int(sys.argv[1])

async def main():
    arrived = 0
    all_here = asyncio.Event()

    async def echo(request, context):
        nonlocal arrived
        arrived += 1
        if arrived == CALLS:
            print("all", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            all_here.set()
        await all_here.wait()
        return request

    handler = grpc.method_handlers_generic_handler(
        "t", {"echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


@pytest.fixture
def echo_server() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(CALLS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield port, process
    finally:
        process.kill()
        process.wait()


def _unread(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def _capacity() -> int:
    """How many one-byte writes a fresh Unix socket pair holds on this kernel."""
    reading, writing = socket.socketpair()
    writing.setblocking(False)
    count = 0
    try:
        while True:
            writing.send(b"1")
            count += 1
    except BlockingIOError:
        return count
    finally:
        reading.close()
        writing.close()


def _busy_turn() -> None:
    """A turn of a busy manager's loop: long next to gRPC's own pace of delivering answers."""
    time.sleep(TURN)


def _hold_until_unread(wake_socket: socket.socket, full: int, deadline: float) -> None:
    """Hold the calling loop (as a busy manager's is held) until ``full`` wake bytes wait."""
    while _unread(wake_socket) < full:
        assert time.monotonic() < deadline, "the answers never filled gRPC's wake-up socket"
        time.sleep(0.001)


async def _turns_until_answered(port: int, process: subprocess.Popen[str], unblocked: bool) -> int:
    loop = asyncio.get_running_loop()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        if unblocked:
            assert wakeups.unblock(loop)
        found = wakeups.grpc_reader(loop)
        assert found is not None
        wake_socket = found[0]
        echo = channel.unary_unary("/t/echo")
        calls = [asyncio.ensure_future(echo(b"x", timeout=DEADLINE)) for _ in range(CALLS)]
        # Every call goes out and reaches the server, which holds them all until told.
        assert process.stdout is not None and process.stdin is not None
        deadline = time.monotonic() + DEADLINE
        while not select.select([process.stdout], [], [], 0)[0]:
            assert time.monotonic() < deadline, "the server never got every call"
            await asyncio.sleep(0.001)
        assert process.stdout.readline().strip() == "all"
        # Now hold the loop (a busy manager) while every answer comes back.
        process.stdin.write("go\n")
        process.stdin.flush()
        full = min(_capacity(), CALLS) - 2
        _hold_until_unread(wake_socket, full, deadline)
        turns = 0
        while not all(call.done() for call in calls):
            turns += 1
            _busy_turn()
            await asyncio.sleep(0)
            assert turns < CALLS * 20, "the calls were never answered"
        assert all(call.result() == b"x" for call in calls)
        if unblocked:
            # One wake takes every byte waiting: nothing is left to wake the loop in vain.
            for _ in range(3):
                await asyncio.sleep(0)
            assert _unread(wake_socket) == 0
        return turns
    finally:
        await channel.close()


def test_with_the_wakeup_socket_unblocked_a_held_loop_gets_every_answer_in_a_few_turns(
    echo_server: tuple[int, subprocess.Popen[str]],
) -> None:
    turns = asyncio.run(_turns_until_answered(*echo_server, unblocked=True))
    assert turns < 150, f"{turns} loop turns for {CALLS} answers"
