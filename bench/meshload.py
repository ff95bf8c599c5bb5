"""HTTP client for the routing-mesh tests and benchmark: a prober and a load generator.

Run inside a network namespace (``nsenter --net=...``) as a plain script, standard library
only, so the same client measures the mesh and the direct path:

    python bench/meshload.py probe --interval 0.02 --timeout 0.5 URL...
        one GET after another, round robin over the URLs, until SIGTERM; one JSON line per
        request: {"t": seconds since start, "wall": time.time() when sent, "url": ..., "ok": bool,
        "body": first line or error}
    python bench/meshload.py get --count 60 URL
        COUNT GETs one after another; one JSON line: a list of [ok, body] pairs
    python bench/meshload.py load --connections 16 --duration 10 URL
        closed-loop load: each of the connections sends GETs back to back, a new TCP connection
        per request (the mesh balances connections, so keep-alive would measure one backend);
        prints one JSON line: requests, errors, rps, p50_ms, p99_ms.

Each request is ``GET / HTTP/1.0`` and reads the whole answer: what curl or wget would do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from urllib.parse import urlsplit


async def get(url: str, request_timeout: float) -> str:
    """One GET; the first line of the body (``search result from <host>``). Raises on error."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    async with asyncio.timeout(request_timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            answer = await reader.read()
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise OSError(f"answer {status[:60]!r}")
    return body.decode(errors="replace").strip().splitlines()[0] if body.strip() else ""


async def probe(urls: list[str], interval: float, request_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    began = time.monotonic()
    index = 0
    while not stop.is_set():
        url = urls[index % len(urls)]
        index += 1
        sent = time.monotonic()
        try:
            body, ok = await get(url, request_timeout), True
        except (OSError, TimeoutError) as exc:
            body, ok = f"{type(exc).__name__}: {exc}", False
        line = {"t": round(sent - began, 4), "wall": time.time(), "url": url, "ok": ok, "body": body}
        print(json.dumps(line), flush=True)
        rest = interval - (time.monotonic() - sent)
        if rest > 0:
            try:
                async with asyncio.timeout(rest):
                    await stop.wait()
            except TimeoutError:
                pass


async def get_many(url: str, count: int, request_timeout: float) -> list[tuple[bool, str]]:
    results: list[tuple[bool, str]] = []
    for _ in range(count):
        try:
            results.append((True, await get(url, request_timeout)))
        except (OSError, TimeoutError) as exc:
            results.append((False, f"{type(exc).__name__}: {exc}"))
    return results


async def load(url: str, connections: int, duration: float, request_timeout: float) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                await get(url, request_timeout)
                latencies.append(time.monotonic() - sent)
            except (OSError, TimeoutError):
                errors += 1

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    spent = time.monotonic() - began
    latencies.sort()

    def percentile(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else 0.0
        )

    return {
        "url": url,
        "connections": connections,
        "seconds": round(spent, 3),
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / spent, 1) if spent else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=0.5)
    p.add_argument("urls", nargs="+")
    g = sub.add_parser("get")
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--timeout", type=float, default=2.0)
    g.add_argument("url")
    lo = sub.add_parser("load")
    lo.add_argument("--connections", type=int, default=16)
    lo.add_argument("--duration", type=float, default=10.0)
    lo.add_argument("--timeout", type=float, default=2.0)
    lo.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "probe":
        asyncio.run(probe(args.urls, args.interval, args.timeout))
    elif args.command == "get":
        print(json.dumps(asyncio.run(get_many(args.url, args.count, args.timeout))), flush=True)
    else:
        print(
            json.dumps(asyncio.run(load(args.url, args.connections, args.duration, args.timeout))), flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
