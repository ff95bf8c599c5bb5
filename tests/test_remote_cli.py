"""Issue 17 item 12: the remote CLI. A daemon serves its control API on TCP with mutual TLS
(``--control-listen``); ``shoal -H tcp://... --tlsverify``, the ``SHOAL_*`` variables and
contexts reach it from elsewhere; a client without a certificate from the operator's CA is
refused before any method runs, and every failure is one line.

Real daemon, real TLS (certificates from ``shoal.testing.testcerts``); the CLI runs as another
process with its own config directory and no ``SHOAL_HOST`` pointing at the socket.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import SHOAL, TEST_IMAGE, CLIResult, ShoalNode, free_port
from shoal.testing.testcerts import TestCA

Factory = Callable[..., ShoalNode]


@dataclass
class Remote:
    """A daemon listening for remote control, and certificate directories for clients."""

    node: ShoalNode
    url: str
    good: Path  # ca.pem, cert.pem, key.pem from the operator's CA
    rogue: Path  # a client certificate from another CA (and that CA as ca.pem)
    config: Path  # the CLI's SHOAL_CONFIG

    def cli(self, *args: str, env: dict[str, str] | None = None) -> CLIResult:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        environment["SHOAL_CONFIG"] = str(self.config)
        environment.update(env or {})
        proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, env=environment, timeout=120)
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    def tls_args(self, directory: Path | None = None) -> list[str]:
        directory = directory or self.good
        return [
            "--tlsverify",
            "--tlscacert", str(directory / "ca.pem"),
            "--tlscert", str(directory / "cert.pem"),
            "--tlskey", str(directory / "key.pem"),
        ]  # fmt: skip


def write_dir(directory: Path, ca: bytes, cert: bytes, key: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "ca.pem").write_bytes(ca)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return directory


@pytest.fixture
def remote(node_factory: Factory, tmp_path: Path) -> Remote:
    operator, other = TestCA("operator CA"), TestCA("some other CA")
    server = write_dir(tmp_path / "server", operator.pem, *operator.issue("127.0.0.1", server_ip="127.0.0.1"))
    good = write_dir(tmp_path / "good", operator.pem, *operator.issue("admin"))
    rogue = write_dir(tmp_path / "rogue", other.pem, *other.issue("admin"))
    port = free_port()
    node = node_factory(
        extra_args=[
            "--control-listen", f"tcp://127.0.0.1:{port}",
            "--tlscacert", str(server / "ca.pem"),
            "--tlscert", str(server / "cert.pem"),
            "--tlskey", str(server / "key.pem"),
        ]
    ).start()  # fmt: skip
    node.init()
    return Remote(node, f"tcp://127.0.0.1:{port}", good, rogue, tmp_path / "config")


def one_line_error(result: CLIResult, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.cluster
def test_remote_cli_with_mutual_tls_contexts_and_refusals(remote: Remote, tmp_path: Path) -> None:
    # -H tcp:// with the TLS flags: what a local user can do, a remote one can.
    created = remote.cli(
        "-H", remote.url, *remote.tls_args(),
        "service", "create", "--detach", "--name", "remote", TEST_IMAGE, "sleep", "3600",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert remote.node.ok("service", "ls", "--format", "{{.Name}}").stdout == "remote\n"
    listed = remote.cli("-H", remote.url, *remote.tls_args(), "node", "ls", "--format", "{{.Hostname}}")
    assert listed.returncode == 0 and listed.stdout == "node1\n", listed.stderr

    # docker's variables under SHOAL_ names: host, verify, and a directory of ca/cert/key.pem
    env = {"SHOAL_HOST": remote.url, "SHOAL_TLS_VERIFY": "1", "SHOAL_CERT_PATH": str(remote.good)}
    by_env = remote.cli("service", "inspect", "-f", "{{.Spec.Name}}", "remote", env=env)
    assert by_env.returncode == 0 and by_env.stdout == "remote\n", by_env.stderr

    # a context keeps the address and copies the certificates (key 0600)
    made = remote.cli(
        "context", "create", "prod", "--description", "the test swarm", "--host", remote.url,
        "--tlscacert", str(remote.good / "ca.pem"),
        "--tlscert", str(remote.good / "cert.pem"),
        "--tlskey", str(remote.good / "key.pem"),
    )  # fmt: skip
    assert made.returncode == 0 and made.stdout == "prod\n", made.stderr
    key_copy = remote.config / "contexts" / "prod" / "tls" / "key.pem"
    assert key_copy.read_bytes() == (remote.good / "key.pem").read_bytes()
    assert stat.S_IMODE(key_copy.stat().st_mode) == 0o600
    assert stat.S_IMODE((remote.config / "contexts" / "prod").stat().st_mode) == 0o700
    by_flag = remote.cli("-c", "prod", "service", "ls", "-q")
    assert by_flag.returncode == 0 and len(by_flag.stdout.split()) == 1, by_flag.stderr
    assert remote.cli("context", "use", "prod").stdout == "prod\n"
    table = remote.cli("context", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESCRIPTION", "SHOAL", "ENDPOINT"]
    assert any(line.startswith("prod *") and remote.url in line for line in table), table
    current = remote.cli("service", "ls", "--format", "{{.Name}}")  # no -H, no SHOAL_HOST: the context
    assert current.returncode == 0 and current.stdout == "remote\n", current.stderr
    # streams too: events up to now, over the same TLS connection kind
    streamed = remote.cli("events", "--since", "10m", "--until", "0s", "--format", "{{.Action}}")
    assert streamed.returncode == 0 and "create" in streamed.stdout.split(), streamed.stderr
    (inspected,) = json.loads(remote.cli("context", "inspect", "prod").stdout)
    assert inspected["Endpoints"]["shoal"]["Host"] == remote.url
    assert inspected["Metadata"] == {"Description": "the test swarm"}
    assert "conflicting options" in one_line_error(
        remote.cli("-H", remote.url, "-c", "prod", "node", "ls"), 2
    )
    assert "is in use" in one_line_error(remote.cli("context", "rm", "prod"), 2)
    assert remote.cli("context", "rm", "-f", "prod").returncode == 0
    assert not (remote.config / "contexts" / "prod").exists()
    assert "does not exist" in one_line_error(remote.cli("-c", "prod", "node", "ls"), 2)

    # refusals: a client certificate from another CA, a daemon certificate the client does not
    # trust, no TLS at all, an address where nothing listens; each one line, nothing changed.
    rogue_args = [
        "--tlsverify",
        "--tlscacert", str(remote.good / "ca.pem"),
        "--tlscert", str(remote.rogue / "cert.pem"),
        "--tlskey", str(remote.rogue / "key.pem"),
    ]  # fmt: skip
    refused = remote.cli("-H", remote.url, *rogue_args, "service", "rm", "remote")
    assert "refused this client's certificate" in one_line_error(refused, 1)
    untrusted = remote.cli("-H", remote.url, *remote.tls_args(remote.rogue), "service", "rm", "remote")
    assert "cannot verify the shoal daemon" in one_line_error(untrusted, 1)
    assert "needs mutual TLS" in one_line_error(remote.cli("-H", remote.url, "service", "ls"), 2)
    garbage = write_dir(tmp_path / "garbage", b"not a CA", b"not a certificate", b"not a key")
    bad_files = remote.cli("-H", remote.url, *remote.tls_args(garbage), "service", "ls")
    assert f"cannot use the CA certificate {garbage / 'ca.pem'}" in one_line_error(bad_files, 2)
    mismatched = [*remote.tls_args()[:5], "--tlskey", str(remote.rogue / "key.pem")]
    mismatch = remote.cli("-H", remote.url, *mismatched, "service", "ls")
    assert "cannot use the certificate" in one_line_error(mismatch, 2)
    closed = f"tcp://127.0.0.1:{free_port()}"
    unreachable = remote.cli("-H", closed, *remote.tls_args(), "service", "ls")
    assert f"cannot connect to the shoal daemon at {closed}" in one_line_error(unreachable, 1)
    assert remote.node.ok("service", "ls", "--format", "{{.Name}}").stdout == "remote\n"


@pytest.mark.cluster
def test_a_client_without_a_certificate_never_reaches_a_method(remote: Remote) -> None:
    """Raw connections: TLS without a client certificate, and plain TCP, get no answer."""
    host, port = remote.url.removeprefix("tcp://").rsplit(":", 1)
    request = json.dumps({"method": "service.rm", "params": {"services": ["anything"]}}).encode() + b"\n"
    context = ssl.create_default_context(cafile=str(remote.good / "ca.pem"))
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(request)
                answer = tls.recv(4096)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        answer = b""  # refused during or right after the handshake
    assert answer == b"", answer
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        plain.sendall(request)
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"result" not in answer and b"error" not in answer


def test_daemon_refuses_control_listen_without_tls(tmp_path: Path) -> None:
    base = [*SHOAL, "daemon", "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "s.sock")]
    cases = [
        (["--control-listen", "tcp://127.0.0.1:1"], "needs --tlscacert"),
        (["--tlscacert", "x"], "go with --control-listen"),
        (
            [
                "--control-listen",
                "tcp://127.0.0.1:1",
                "--tlscacert",
                "nope",
                "--tlscert",
                "x",
                "--tlskey",
                "y",
            ],
            "cannot read the CA certificate nope",
        ),
        (
            ["--control-listen", "127.0.0.1:1", "--tlscacert", "a", "--tlscert", "b", "--tlskey", "c"],
            "use tcp://HOST:PORT",
        ),
    ]
    config = tmp_path / "daemon.toml"
    config.write_text('[control]\nlisten = "tcp://127.0.0.1:1"\ntlscacert = "ca.pem"\n')
    cases.append((["--config", str(config)], "needs --tlscacert"))
    config_key = tmp_path / "key.toml"
    config_key.write_text('[control]\nlisten = "tcp://127.0.0.1:1"\ntlskey = 3\n')
    cases.append((["--config", str(config_key)], "[control] takes the strings"))
    # the swarm's own CA as the clients' CA: every node certificate would control the swarm
    swarm_ca = TestCA("swarm CA")
    (tmp_path / "state" / "certificates").mkdir(parents=True)
    (tmp_path / "state" / "certificates" / "swarm-root-ca.crt").write_bytes(swarm_ca.pem)
    server = write_dir(tmp_path / "server", swarm_ca.pem, *swarm_ca.issue("127.0.0.1", server_ip="127.0.0.1"))
    tls = ["--tlscacert", str(server / "ca.pem"), "--tlscert", str(server / "cert.pem")]
    cases.append(
        (
            ["--control-listen", "tcp://127.0.0.1:1", *tls, "--tlskey", str(server / "key.pem")],
            "this swarm's CA",
        )
    )
    for args, message in cases:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        result = CLIResult(proc.returncode, proc.stdout, proc.stderr)
        assert message in one_line_error(result, 2), (args, result.stderr)
