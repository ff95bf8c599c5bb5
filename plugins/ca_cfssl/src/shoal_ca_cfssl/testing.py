"""A real ``cfssl serve`` for tests: its own CA, a TLS server certificate, mutual TLS.

Used by this plugin's tests and the cluster tests (``tests/test_external_ca.py``). It runs the
same commands ``docs/external-ca.md`` tells operators to run: ``cfssl gencert -initca`` for the CA,
``cfssl gencert`` for the server and client certificates, and ``cfssl serve ... -mutual-tls-ca``
so only clients holding a certificate from that CA get in. A missing ``cfssl`` binary is an
error, never a skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

#: Usages every node certificate needs: nodes are both TLS servers and TLS clients.
NODE_USAGES = ["signing", "key encipherment", "server auth", "client auth"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cfssl_binary(name: str = "cfssl") -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's golang-cfssl (apt-get install golang-cfssl)")
    return path


def signing_config(
    default_expiry: str = "2160h", backdate: str = "", profiles: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A cfssl signing config: a default profile for node certificates, plus ``profiles``.

    cfssl sets NotBefore to the current time *rounded to the minute* minus ``backdate``
    (5 minutes when unset) and NotAfter to NotBefore + expiry, so a short-lived test profile
    needs ``backdate`` of at least 30s (NotBefore never in the future) and an expiry well above
    twice that (a renewal point after now).

    The ``refuse`` profile only signs a name no node has: cfssl answers ``success: false``
    ("Request does not match policy whitelist"), which is how tests make cfssl refuse.
    """
    return {
        "signing": {
            "default": {
                "expiry": default_expiry,
                "usages": NODE_USAGES,
                **({"backdate": backdate} if backdate else {}),
            },
            "profiles": {
                "client": {"expiry": "8760h", "usages": NODE_USAGES},
                "refuse": {"expiry": "1h", "name_whitelist": "^nothing-matches-this$", "usages": NODE_USAGES},
                **(profiles or {}),
            },
        }
    }


class CfsslServer:
    """A cfssl CA and server in ``directory``; ``start``/``stop`` as often as a test needs."""

    def __init__(self, directory: Path, config: dict[str, Any] | None = None, port: int = 0) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "cfssl-serve.log"
        self.config_file = self.dir / "config.json"
        self.config_file.write_text(json.dumps(config or signing_config()))
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca-key.pem"
        self._cfssl = cfssl_binary()
        self._cfssljson = cfssl_binary("cfssljson")
        self._run_gencert(["-initca"], {"CN": "shoal-external-ca", "names": [{"O": "shoal tests"}]}, "ca")
        self.server_cert, self.server_key = self.issue("server", "127.0.0.1", hosts=["127.0.0.1"])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v1/cfssl/sign"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run_gencert(self, args: list[str], csr: dict[str, Any], bare: str) -> None:
        csr = {"key": {"algo": "ecdsa", "size": 256}, **csr}
        gencert = subprocess.run(
            [self._cfssl, "gencert", *args, "-"],
            input=json.dumps(csr).encode(),
            capture_output=True,
            check=False,
            cwd=self.dir,
            timeout=60,
        )
        if gencert.returncode != 0:
            raise RuntimeError(f"cfssl gencert {' '.join(args)} failed: {gencert.stderr.decode()[-500:]}")
        split = subprocess.run(
            [self._cfssljson, "-bare", bare],
            input=gencert.stdout,
            capture_output=True,
            check=False,
            cwd=self.dir,
            timeout=60,
        )
        if split.returncode != 0:
            raise RuntimeError(f"cfssljson failed: {split.stderr.decode()[-500:]}")

    def issue(
        self, name: str, common_name: str, hosts: list[str] | None = None, profile: str = "client"
    ) -> tuple[Path, Path]:
        """A certificate from this CA, out of band (``cfssl gencert``): (cert file, key file)."""
        self._run_gencert(
            [
                f"-ca={self.ca_cert}",
                f"-ca-key={self.ca_key}",
                f"-config={self.config_file}",
                f"-profile={profile}",
                f"-hostname={','.join(hosts or [common_name])}",
            ],
            {"CN": common_name},
            name,
        )
        return self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"

    def command(self) -> list[str]:
        return [
            self._cfssl,
            "serve",
            "-address",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-ca",
            str(self.ca_cert),
            "-ca-key",
            str(self.ca_key),
            "-config",
            str(self.config_file),
            "-tls-cert",
            str(self.server_cert),
            "-tls-key",
            str(self.server_key),
            "-mutual-tls-ca",
            str(self.ca_cert),
        ]

    def start(self, timeout: float = 30.0) -> CfsslServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cfssl serve exited with {self.proc.returncode}: {self.log_text()[-1000:]}"
                )
            if self._handshakes():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cfssl serve did not answer on port {self.port} within {timeout}s")

    def _handshakes(self) -> bool:
        """True once a TLS handshake with the server certificate and a client certificate works."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(self.server_cert, self.server_key)
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
