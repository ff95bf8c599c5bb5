"""Three real etcd members (Debian's ``etcd-server``) on 127.0.0.1 with mutual TLS between
members and with clients, started and stopped by the tests (each its own ports and data dir)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Files:
    ca: Path
    cert: Path
    key: Path


def _write_pair(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def make_certs(directory: Path) -> tuple[Files, Files]:
    """(etcd's files: server and peer, both usages; the store's client files), one test CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, usages: list[x509.ObjectIdentifier]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return _write_pair(directory, name, cert, key)

    server = issue("etcd", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    client = issue("shoal-manager", [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Files(ca_path, *server), Files(ca_path, *client)


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
            self.start(i, new=True)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{m['client']}" for m in self.members]

    def start(self, i: int, new: bool = False) -> None:
        m, f = self.members[i], self.server_files
        initial = ",".join(f"{x['name']}=https://127.0.0.1:{x['peer']}" for x in self.members)
        log = open(self.base / f"{m['name']}.log", "ab")
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
        log.close()

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
        import asyncio

        from shoal_store_etcd.client import Credentials, EtcdClient, EtcdError

        f = self.client_files
        creds = Credentials(f.ca.read_bytes(), f.cert.read_bytes(), f.key.read_bytes())

        async def probe() -> bool:
            client = EtcdClient(self.endpoints, creds)
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
