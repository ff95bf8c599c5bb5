"""Every error case through the real CLI: one line on stderr, non-zero exit, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from harness import SHOAL, TEST_IMAGE, ShoalNode, wait_until
from shoal.roles.base import API_VERSIONS

pytestmark = [pytest.mark.cluster]


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- daemon plugin errors


def fake_distribution(site: Path, dist: str, group: str, name: str, module: str, source: str) -> None:
    """Install a throwaway distribution (dist-info + module) into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")


def run_daemon(tmp_path: Path, *args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SHOAL_PLUGINS", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    sock = tmp_path / "never.sock"
    proc = subprocess.run(
        [*SHOAL, "daemon", "--state-dir", str(tmp_path / "state"), "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert not sock.exists(), "a daemon refused at start must not serve its socket"
    return proc


def test_daemon_unknown_plugin_lists_installed(tmp_path: Path) -> None:
    proc = run_daemon(tmp_path, "--plugin", "runtime=nope")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert 'unknown runtime plugin "nope"' in line
    assert "docker" in line and "podman" in line


def test_daemon_unknown_role(tmp_path: Path) -> None:
    proc = run_daemon(tmp_path, "--plugin", "bogus=x")
    assert proc.returncode == 2
    assert "bogus" in one_line_error(proc.stderr)


def test_daemon_plugin_import_failure_names_distribution(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(
        site,
        "acme-runtime-broken",
        "shoal.runtime",
        "broken",
        "acme_broken",
        "import acme_module_that_is_missing\n",
    )
    proc = run_daemon(tmp_path, "--plugin", "runtime=broken", site=site)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "acme-runtime-broken" in line and "acme_module_that_is_missing" in line


def test_daemon_duplicate_plugin_names_both(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(
        site, "acme-docker", "shoal.runtime", "docker", "acme_docker", "PROVIDER_CLASS = None\n"
    )
    proc = run_daemon(tmp_path, site=site)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "acme-docker" in line and "shoal-runtime-docker" in line


def test_daemon_wrong_role_and_api_version(tmp_path: Path) -> None:
    provider = """
        from shoal import hookimpl

        class Provider:
            role = "{role}"
            api_version = {version}

        PROVIDER_CLASS = Provider

        @hookimpl
        def shoal_runtime_provider(context):
            return Provider()
    """
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(
        site,
        "acme-wrongrole",
        "shoal.runtime",
        "wrongrole",
        "acme_wrongrole",
        provider.format(role="scheduler", version=1),
    )
    fake_distribution(
        site,
        "acme-future",
        "shoal.runtime",
        "future",
        "acme_future",
        provider.format(role="runtime", version=99),
    )
    proc = run_daemon(tmp_path, "--plugin", "runtime=wrongrole", site=site)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert '"scheduler"' in line and '"runtime"' in line
    proc = run_daemon(tmp_path, "--plugin", "runtime=future", site=site)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "99" in line and f"version {API_VERSIONS['runtime']}" in line


# --------------------------------------------------------------------------- client errors


def test_no_daemon_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*SHOAL, "-H", f"unix://{tmp_path}/none.sock", "node", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot connect to the shoal daemon" in one_line_error(proc.stderr)


@pytest.fixture
def cluster(node_factory: object) -> ShoalNode:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    return node


def test_init_with_unknown_plugin_changes_nothing(cluster: ShoalNode) -> None:
    result = cluster.cli("swarm", "init", "--advertise-addr", cluster.addr, "--plugin", "scheduler=nope")
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert 'unknown scheduler plugin "nope"' in line and "spread" in line
    result = cluster.cli("swarm", "init", "--plugin", "runtime=podman")
    assert result.returncode == 2
    assert "per daemon" in one_line_error(result.stderr)
    assert cluster.info()["Swarm"] == "inactive"
    assert not (cluster.state_dir / "certificates").exists()
    not_manager = cluster.cli("service", "ls")
    assert not_manager.returncode == 1
    assert "not a swarm manager" in one_line_error(not_manager.stderr)
    cluster.init()
    again = cluster.cli("swarm", "init")
    assert again.returncode == 1
    assert "already part of a swarm" in one_line_error(again.stderr)


BAD_CREATES = [
    (["--name", "a"], "Missing argument"),
    (["--name", "a", "--constraint", "node.rol==x", TEST_IMAGE], 'unknown key "node.rol"'),
    (["--name", "a", "--constraint", "node.role=worker", TEST_IMAGE], "node.role=worker"),
    (["--name", "bad name", TEST_IMAGE], "invalid service name"),
    (["--name", "a", "--reserve-memory", "10zz", TEST_IMAGE], "--reserve-memory"),
    (["--name", "a", "--reserve-cpu", "lots", TEST_IMAGE], "--reserve-cpu"),
    (["--name", "a", "--replicas", "-1", TEST_IMAGE], "--replicas"),
    (["--name", "a", "--replicas", "x", TEST_IMAGE], "--replicas"),
    (["--name", "a", "--replicas-max-per-node", "-2", TEST_IMAGE], "--replicas-max-per-node"),
    (["--name", "a", "--pull", "sometimes", TEST_IMAGE], "--pull"),
    (["--name", "a", "--env", "=x", TEST_IMAGE], "--env"),
    (["--name", "a", "--restart-delay", "5 parsecs", TEST_IMAGE], "--restart-delay"),
    (["--name", "a", "--restart-condition", "maybe", TEST_IMAGE], "--restart-condition"),
    (["--ulimit", "nofile=lots", TEST_IMAGE], "--ulimit"),  # without --name: docker's generated name
]


def test_bad_service_input_is_refused_without_change(cluster: ShoalNode) -> None:
    cluster.init()
    cluster.ok("service", "create", "--name", "keep", "--replicas", "0", "--detach", TEST_IMAGE)
    before = cluster.ok("service", "ls", "--format", "json").stdout
    for args, expected in BAD_CREATES:
        result = cluster.cli("service", "create", "--detach", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in one_line_error(result.stderr), (args, result.stderr)
    duplicate = cluster.cli("service", "create", "--name", "keep", "--detach", TEST_IMAGE)
    assert duplicate.returncode == 2 and "already in use" in one_line_error(duplicate.stderr)
    for args, expected in [
        (["scale", "keep=lots"], "keep=lots" if False else "lots"),
        (["scale", "keep"], "SERVICE=REPLICAS"),
        (["scale", "nosuch=2"], "nosuch not found"),
        (["rm", "nosuch"], "nosuch not found"),
        (["ps", "nosuch"], "nosuch not found"),
        (["inspect", "nosuch"], "no such service: nosuch"),  # docker's words
        (["logs", "keep", "--tail", "many"], "--tail"),
    ]:
        result = cluster.cli("service", *args)
        assert result.returncode != 0, (args, result.stdout)
        assert expected in one_line_error(result.stderr), (args, result.stderr)
    assert cluster.ok("service", "ls", "--format", "json").stdout == before
    bad_format = cluster.cli("service", "ls", "--format", "yaml")
    assert bad_format.returncode == 2 and "--format" in one_line_error(bad_format.stderr)


def test_lists_formats(cluster: ShoalNode) -> None:
    cluster.init()
    cluster.ok("service", "create", "--name", "fmt", "--replicas", "1", "--detach", TEST_IMAGE)
    services = cluster.ok("service", "ls", "--format", "json").json_lines()
    assert set(services[0]) == {"ID", "Name", "Mode", "Replicas", "Image", "Ports"}
    assert len(services[0]["ID"]) == 25
    table = cluster.ok("service", "ls").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    assert table[1].split()[0] == services[0]["ID"][:12]
    # -q prints docker's 12 characters, and they work as a reference (a unique ID prefix).
    short = services[0]["ID"][:12]
    assert cluster.ok("service", "ls", "-q").stdout.split() == [short]
    assert json.loads(cluster.ok("service", "inspect", short).stdout)[0]["ID"] == services[0]["ID"]
    task_ids = wait_until(
        lambda: cluster.ok("node", "ps", "-q", "self").stdout.split(), 30, what="the task on this node"
    )
    assert len(task_ids) == 1 and len(task_ids[0]) == 12
    assert cluster.ok("service", "ps", "-q", short).stdout.split() == task_ids
    full_task_ids = cluster.ok("service", "ps", "-q", "--no-trunc", "fmt").stdout.split()
    assert len(full_task_ids[0]) == 25 and full_task_ids[0].startswith(task_ids[0])
    assert cluster.ok("service", "ls", "--format", "{{.Name}}:{{.Mode}}").stdout.strip() == "fmt:replicated"
    nodes = cluster.ok("node", "ls", "--format", "json").json_lines()
    assert set(nodes[0]) == {
        "ID",
        "Hostname",
        "Status",
        "Availability",
        "ManagerStatus",
        "EngineVersion",
        "Self",
    }
    assert nodes[0]["Self"] is True and nodes[0]["ManagerStatus"] == "Leader"
    wait_until(
        lambda: cluster.ok("node", "ls", "--format", "json").json_lines()[0]["Status"] == "Ready",
        30,
        what="node Ready",
    )
    tasks = cluster.ok("service", "ps", "fmt", "--format", "json").json_lines()
    assert set(tasks[0]) == {"ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports"}
    inspect = json.loads(cluster.ok("service", "inspect", "fmt").stdout)
    assert inspect[0]["Spec"]["Name"] == "fmt"
    node_inspect = json.loads(cluster.ok("node", "inspect", "self").stdout)
    assert node_inspect[0]["Spec"]["Role"] == "manager"
    assert "ca_key" not in json.dumps(json.loads(cluster.ok("info", "--format", "json").stdout))
