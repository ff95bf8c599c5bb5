"""A real private registry for tests: Debian's ``docker-registry`` with htpasswd auth and TLS.

The registry listens on 127.0.0.1 with its own port; its certificate comes from a CA made for
the test, which the engines are told to trust through their per-registry ``certs.d``
directories (created here, removed on ``stop``).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests
from harness import free_port, terminate, wait_until
from shoal.testing.testcerts import server_certificates

with warnings.catch_warnings():  # bcrypt for htpasswd; gone in Python 3.13 (then: the bcrypt package)
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

REGISTRY = "/usr/bin/docker-registry"
#: Where each engine looks for the CA of a registry ``HOST:PORT``.
TRUST_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))


@dataclass
class PrivateRegistry:
    """One running registry requiring ``username``/``password``."""

    base: Path
    username: str
    password: str
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    trusted: list[Path] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> PrivateRegistry:
        self.port = self.port or free_port(self.host)
        self.base.mkdir(parents=True, exist_ok=True)
        made = server_certificates(self.host, "shoal test registry CA")
        (self.base / "ca.crt").write_bytes(made.ca)
        (self.base / "server.crt").write_bytes(made.certificate)
        (self.base / "server.key").write_bytes(made.key)
        hashed = crypt.crypt(self.password, crypt.mksalt(crypt.METHOD_BLOWFISH))
        (self.base / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.base / "data")}},
            "http": {
                "addr": self.address,
                "tls": {"certificate": str(self.base / "server.crt"), "key": str(self.base / "server.key")},
            },
            "auth": {"htpasswd": {"realm": "shoal-test", "path": str(self.base / "htpasswd")}},
        }
        (self.base / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        for trust in TRUST_DIRS:
            directory = trust / self.address
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.base / "ca.crt", directory / "ca.crt")
            self.trusted.append(directory)
        log = open(self.base / "registry.log", "ab")
        self.proc = subprocess.Popen(
            [REGISTRY, "serve", str(self.base / "config.yml")], stdout=log, stderr=log
        )
        wait_until(
            self._answers, 30, what=f"the registry on {self.address} (log: {self.base / 'registry.log'})"
        )
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"registry exited: {(self.base / 'registry.log').read_text()[-2000:]}")
        try:
            answer = requests.get(f"https://{self.address}/v2/", verify=str(self.base / "ca.crt"), timeout=2)
        except requests.RequestException:
            return False
        return answer.status_code == 401

    def docker_config(self, directory: Path) -> Path:
        """A ``DOCKER_CONFIG`` directory as ``docker login`` to this registry leaves it."""
        directory.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        (directory / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return directory

    def stop(self) -> None:
        terminate(self.proc)
        for directory in self.trusted:
            shutil.rmtree(directory, ignore_errors=True)
        self.trusted.clear()
