"""Three real etcd members (Debian's ``etcd-server``) on 127.0.0.1 with mutual TLS between
members and with clients, each with its own ports and data dir: what the plugin's own tests
and the kernel's cluster tests (``--plugin store=etcd``) run against. Never for anything but
tests: the certificates come from ``shoal.testing.testcerts``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.testing.testcerts import TestCA

from shoal_store_etcd.client import Credentials, EtcdClient, EtcdError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Files:
    ca: Path
    cert: Path
    key: Path

    def credentials(self) -> Credentials:
        return Credentials(self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes())


def make_certs(directory: Path) -> tuple[Files, Files]:
    """(etcd's files: server and peer, both usages; the store's client files), one test CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA("etcd test CA")
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.pem)

    def write(name: str, pair: tuple[bytes, bytes]) -> Files:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(pair[0])
        key.write_bytes(pair[1])
        key.chmod(0o600)
        return Files(ca_path, cert, key)

    server = write("etcd", ca.issue("etcd", server_ip="127.0.0.1", client_too=True))
    client = write("shoal-manager", ca.issue("shoal-manager"))
    return server, client


class EtcdCluster:
    """Three members; ``endpoints`` for clients; ``stop(i)``/``start(i)`` for failure tests."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("no etcd binary: apt-get install etcd-server")
        self.binary, self.base = binary, base
        self.server_files, self.client_files = make_certs(base / "certs")
        self.members = [{"name": f"e{i}", "client": free_port(), "peer": free_port()} for i in (1, 2, 3)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None, None, None]
        for i in range(3):
            self.start(i)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{m['client']}" for m in self.members]

    def plugin_args(self, prefix: str) -> list[str]:
        """``shoal daemon`` arguments for a manager keeping its swarm under ``prefix``."""
        f = self.client_files
        options = {
            "endpoints": ",".join(self.endpoints),
            "ca": f.ca,
            "cert": f.cert,
            "key": f.key,
            "prefix": prefix,
        }
        args = ["--plugin", "store=etcd"]
        for key, value in options.items():
            args += ["--plugin-opt", f"store.{key}={value}"]
        return args

    def start(self, i: int) -> None:
        m, f = self.members[i], self.server_files
        initial = ",".join(f"{x['name']}=https://127.0.0.1:{x['peer']}" for x in self.members)
        with open(self.base / f"{m['name']}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                [
                    self.binary,
                    f"--name={m['name']}",
                    f"--data-dir={self.base / str(m['name'])}",
                    f"--listen-client-urls=https://127.0.0.1:{m['client']}",
                    f"--advertise-client-urls=https://127.0.0.1:{m['client']}",
                    f"--listen-peer-urls=https://127.0.0.1:{m['peer']}",
                    f"--initial-advertise-peer-urls=https://127.0.0.1:{m['peer']}",
                    f"--initial-cluster={initial}",
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=shoal-test",
                    f"--cert-file={f.cert}",
                    f"--key-file={f.key}",
                    f"--trusted-ca-file={f.ca}",
                    "--client-cert-auth",
                    f"--peer-cert-file={f.cert}",
                    f"--peer-key-file={f.key}",
                    f"--peer-trusted-ca-file={f.ca}",
                    "--peer-client-cert-auth",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.procs[i] = None

    def close(self) -> None:
        for i in range(3):
            self.stop(i)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a write through the first endpoint commits (the members have a leader)."""
        credentials = self.client_files.credentials()

        async def probe() -> bool:
            client = EtcdClient(self.endpoints, credentials)
            try:
                await client.put(b"/probe", b"1")
                return True
            except EtcdError:
                return False
            finally:
                await client.close()

        deadline = time.monotonic() + timeout
        while not asyncio.run(probe()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become ready in {timeout} s; see {self.base}/e*.log")
            time.sleep(0.2)


@contextlib.contextmanager
def running_cluster(base: Path) -> Iterator[EtcdCluster]:
    """Three members with a leader, stopped on exit; a missing ``etcd`` is an error naming the
    package (the tests never skip it)."""
    if shutil.which("etcd") is None:
        raise RuntimeError(
            "the etcd store tests need etcd: apt-get install etcd-server (scripts/install-deps.sh)"
        )
    cluster = EtcdCluster(base)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.close()
