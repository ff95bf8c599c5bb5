"""A real Secrets Manager API for tests: moto's standalone server on loopback, over HTTPS.

The server gets a certificate for 127.0.0.1 from a throwaway CA made here, so the plugin is
tested with TLS verified exactly as against AWS (``aws.ca-bundle`` names that CA). Needs
``moto[server]`` (requirements-dev.txt), not a runtime dependency of the plugin.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shoal.testing.testcerts import server_certificates

#: Moto accepts any credentials, botocore needs some to sign with.
TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@dataclass
class MotoServer:
    """``moto_server`` on 127.0.0.1:``port`` with TLS; ``start``/``stop`` may be called again."""

    directory: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        self.ca_bundle, cert, key = _certificates(self.directory)
        self._cert, self._key = cert, key

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def options(self) -> dict[str, str]:
        """The plugin options that point the aws plugin at this server."""
        return {
            "aws.endpoint-url": self.endpoint_url,
            "aws.ca-bundle": str(self.ca_bundle),
            "aws.timeout": "2",
        }

    def start(self, timeout: float = 30.0) -> MotoServer:
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        log = open(self.directory / "moto.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port), "-c", str(self._cert), "-k", str(self._key)],
            stdout=log,
            stderr=log,
            env={**os.environ, **TEST_ENV},
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto_server did not start: {(self.directory / 'moto.log').read_text()[-1000:]}"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    made = server_certificates("127.0.0.1", ca_name="moto test CA")
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(made.ca)
    paths[1].write_bytes(made.certificate)
    paths[2].write_bytes(made.key)
    paths[2].chmod(0o600)
    return paths
