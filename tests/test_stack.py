"""``shoal stack`` on a real daemon and a real engine (docker): deploy a two-service stack with
a network, a secret and a published port; ``stack ls/ps/services``; a redeploy with one change
moves only that service's version; ``stack rm`` removes everything the stack made; a bad file
is one line naming the file, the service and the key, and creates nothing (issue 17 item 13).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import TEST_IMAGE, ShoalNode, free_port, wait_until

pytestmark = [pytest.mark.cluster]

NAMESPACE = "com.docker.stack.namespace"


def _compose(port: int, api_value: str, *, with_api: bool = True) -> str:
    web = f"""
  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 3600"]
    ports: ["{port}:80"]
    networks: [front]
    secrets: [token]
"""
    # stop_grace_period 0s: sleep as PID 1 ignores SIGTERM, so the redeploy's rolling update
    # would wait the default 10 s before the old task is killed.
    api = f"""
  api:
    image: {TEST_IMAGE}
    command: sleep 3600
    stop_grace_period: 0s
    environment:
      - VALUE=${{API_VALUE:-{api_value}}}
    deploy:
      replicas: 1
      labels: {{role: api}}
"""
    return f"""
version: "3.8"
services:{web}{api if with_api else ""}
networks:
  front: {{}}
secrets:
  token: {{file: ./token.txt}}
"""


def _state(node: ShoalNode) -> list[str]:
    """What a refused deploy must leave as it was."""
    return [
        node.ok(what, "ls", "--format", "{{.ID}} {{.Name}}").stdout
        for what in ("service", "network", "secret")
    ]


def _version(node: ShoalNode, service: str) -> int:
    return int(node.ok("service", "inspect", "--format", "{{.Version.Index}}", service).stdout)


def _inspect(node: ShoalNode, what: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(node.ok(what, "inspect", name).stdout)
    return found[0]


def test_stack_deploy_ls_ps_services_redeploy_and_rm(node_factory: Any, tmp_path: Path) -> None:
    node: ShoalNode = node_factory(runtime="docker")
    node.start()
    node.init()
    port = free_port()
    (tmp_path / "token.txt").write_text("t0ken\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(_compose(port, "1"))

    deployed = node.ok("stack", "deploy", "-c", str(compose), "st").stdout.splitlines()
    assert sorted(deployed) == [
        "Creating network st_default",
        "Creating network st_front",
        "Creating secret st_token",
        "Creating service st_api",
        "Creating service st_web",
    ]
    assert node.ok("stack", "ls").stdout.split() == ["NAME", "SERVICES", "st", "2"]

    def running() -> list[str]:
        rows = node.ok("stack", "ps", "st", "--format", "json").json_lines()
        return sorted(r["Name"] for r in rows if r["CurrentState"].startswith("Running"))

    wait_until(lambda: running() == ["st_api.1", "st_web.1"], 90, what="both stack services running")
    assert len(node.ok("stack", "ps", "-q", "st").stdout.split()) == 2
    assert node.ok(
        "stack", "ps", "st", "--filter", "name=st_web", "--format", "{{.Name}}"
    ).stdout.split() == ["st_web.1"]
    table = node.ok("stack", "services", "st").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    assert any("st_web" in line and f"*:{port}->80/tcp" in line for line in table), table
    assert node.ok("stack", "services", "st", "--format", "{{.Name}}").stdout.split() == ["st_api", "st_web"]

    web = _inspect(node, "service", "st_web")
    assert web["Spec"]["Labels"][NAMESPACE] == "st"
    assert web["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"][NAMESPACE] == "st"
    assert [p["PublishedPort"] for p in web["Endpoint"]["Ports"]] == [port]
    assert _inspect(node, "service", "st_api")["Spec"]["Labels"]["role"] == "api"
    for what, name in (("network", "st_front"), ("network", "st_default"), ("secret", "st_token")):
        labels = _inspect(node, what, name).get("Labels") or _inspect(node, what, name)["Spec"]["Labels"]
        assert labels[NAMESPACE] == "st", (what, name)

    # a redeploy with one change: only that service gets a new version (a rolling update)
    versions = {name: _version(node, name) for name in ("st_web", "st_api")}
    compose.write_text(_compose(port, "2"))
    # --detach=false follows the rolling update to its end
    redeployed = node.ok("stack", "deploy", "--detach=false", "--compose-file", str(compose), "st").stdout
    updating = [line.split(" (")[0] for line in redeployed.splitlines() if line.startswith("Updating")]
    assert updating == ["Updating service st_api"] and "verify: Service converged" in redeployed, redeployed
    replicas = node.ok("stack", "services", "st", "--format", "{{.Name}} {{.Replicas}}").stdout
    assert replicas.splitlines() == ["st_api 1/1", "st_web 1/1"]
    assert _version(node, "st_web") == versions["st_web"]
    assert _version(node, "st_api") > versions["st_api"]
    env = _inspect(node, "service", "st_api")["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert env == ["VALUE=2"]

    # errors: one line naming the file, the service and the key; nothing created or changed
    bad = tmp_path / "bad.yml"
    before = _state(node)
    for text, says in (
        (f"services: {{web: {{image: {TEST_IMAGE}, bogus: 1}}}}", "services.web: Additional property bogus"),
        (
            f"services: {{w: {{image: {TEST_IMAGE}, deploy: {{replicas: x}}}}}}",
            'services.w.deploy.replicas: invalid --replicas "x"',
        ),
        (
            f"services: {{w: {{image: {TEST_IMAGE}, networks: [n]}}}}\nnetworks: {{n: {{external: true}}}}",
            'network "n" is declared as external, but could not be found',
        ),
        (
            f"services: {{a: {{image: {TEST_IMAGE}}}, w: {{image: {TEST_IMAGE}, ports: ['{port}:81']}}}}",
            f"services.w.ports: port {port}/tcp is already published by service st_web",
        ),
    ):
        bad.write_text(text)
        result = node.cli("stack", "deploy", "-c", str(bad), "other")
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and says in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert str(bad) in node.cli(
        "stack", "deploy", "-c", str(bad.with_name("nosuch.yml")), "x"
    ).stderr.replace("nosuch", "bad")
    assert _state(node) == before

    # --prune: the service the file no longer names goes; the unchanged one is not touched
    compose.write_text(_compose(port, "2", with_api=False))
    pruned = node.ok("stack", "deploy", "--prune", "-c", str(compose), "st").stdout.splitlines()
    assert pruned == ["Removing service st_api"]
    assert _version(node, "st_web") == versions["st_web"]

    removed = node.ok("stack", "rm", "st").stdout.splitlines()
    assert removed == [
        "Removing service st_web",
        "Removing secret st_token",
        "Removing network st_default",
        "Removing network st_front",
    ]
    assert node.ok("stack", "ls").stdout.split() == ["NAME", "SERVICES"]
    assert "st_" not in node.ok("network", "ls").stdout + node.ok("secret", "ls").stdout
    missing = node.cli("stack", "ps", "st")
    assert missing.returncode == 1 and "nothing found in stack: st" in missing.stderr
    for again in (node.ok("stack", "rm", "st"), node.ok("stack", "services", "st")):  # docker: exit 0
        assert (again.stdout, again.stderr.strip()) == ("", "Nothing found in stack: st")
