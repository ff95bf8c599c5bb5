"""Plugin failures are loud, and ``--external-ca`` picks its CA plugin by what plugins declare.

Broken scheduler plugins are real distributions: a ``*.dist-info`` folder (``METADATA`` and
``entry_points.txt``) and a module, written into a temporary site directory that is put on the
daemon's and the CLI's ``PYTHONPATH``, so entry-point discovery finds them exactly as it finds
an installed package, and nothing is installed into the shared venv.

Each broken plugin must stop ``swarm init`` (and the daemon's start, and a manager becoming
leader) with one line naming the plugin, its distribution, the hook and the error, with nothing
initialised; ``plugin ls`` shows it broken. Before these checks, ``swarm init`` printed "Swarm
initialized" and the services stayed 0/N.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from harness import ShoalNode, wait_until

Factory = Callable[..., ShoalNode]

HEALTHY = """
from shoal import hookimpl
from shoal_scheduler_spread.scheduler import SpreadScheduler

class Scheduler(SpreadScheduler):
    pass

PROVIDER_CLASS = Scheduler

@hookimpl
def shoal_scheduler_provider(context):
    return Scheduler()
"""

RAISES = HEALTHY.replace("return Scheduler()", "raise RuntimeError('cannot place anything')")
WRONG_API = HEALTHY.replace("    pass", "    api_version = 99")
NO_HOOK = HEALTHY.split("@hookimpl")[0]
#: Builds once (the check at start) and fails the next time: when the manager becomes leader.
FAILS_WHEN_LEADING = HEALTHY.replace(
    "def shoal_scheduler_provider(context):\n",
    "def shoal_scheduler_provider(context):\n"
    "    global BUILT\n"
    "    BUILT = globals().get('BUILT', 0) + 1\n"
    "    if BUILT > 1:\n"
    "        raise RuntimeError('fails when leading')\n",
)

#: A CA plugin whose root cannot be made (say, its HSM is offline).
CA_WITHOUT_ROOT = """
from shoal import hookimpl
from shoal_ca_internal.ca import InternalCA

class RootlessCA(InternalCA):
    async def create_root(self):
        raise RuntimeError("HSM offline")

PROVIDER_CLASS = RootlessCA

@hookimpl
def shoal_ca_provider(context):
    return RootlessCA()
"""

HOOK = "shoal_scheduler_provider"
#: (plugin name, module source, what its one line must say after the plugin and distribution)
BROKEN = [
    ("raises", RAISES, f"failed to build its provider in {HOOK}: RuntimeError: cannot place anything"),
    (
        "wrongapi",
        WRONG_API,
        f"implements scheduler API version 99, but this shoal speaks version 2 (built by {HOOK})",
    ),
    ("nohook", NO_HOOK, f"does not implement the hook {HOOK}"),
]


def install(site: Path, name: str, source: str, role: str = "scheduler") -> str:
    """Write (or rewrite) distribution ``shoal-test-<role>-<name>``; returns its label."""
    module = f"shoal_test_{role}_{name}"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: shoal-test-{role}-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[shoal.{role}]\n{name} = {module}\n")
    return f'{role} plugin "{name}" (distribution shoal-test-{role}-{name} 1.0)'


def site_env(site: Path) -> dict[str, str]:
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"}


def assert_not_initialised(node: ShoalNode) -> None:
    info = node.info()
    assert info["Swarm"] == "inactive", info
    assert not (node.state_dir / "state.json").exists()
    assert not (node.state_dir / "certificates").exists()


def test_broken_plugins_stop_swarm_init(node_factory: Factory, tmp_path: Path) -> None:
    site = tmp_path / "site"
    labels = {name: install(site, name, source) for name, source, _ in BROKEN}
    rootless = install(site, "rootless", CA_WITHOUT_ROOT, role="ca")
    node = node_factory(env=site_env(site)).start()

    for name, _, reason in BROKEN:
        result = node.cli("swarm", "init", "--advertise-addr", node.addr, "--plugin", f"scheduler={name}")
        assert result.returncode != 0, result
        assert result.stdout == ""
        assert result.stderr == f"Error: {labels[name]} {reason}\n"
        assert_not_initialised(node)

    # plugin ls shows each of them broken, with the same reason (read from PROVIDER_CLASS when
    # the declaration is wrong, so without naming the hook).
    rows = {row["Name"]: row for row in node.ok("plugin", "ls", "--format", "json").json_lines()}
    for name, _, reason in BROKEN:
        assert rows[name]["Error"] == reason.removesuffix(f" (built by {HOOK})"), rows[name]

    # A CA failing in create_root is named (it used to be "internal error").
    result = node.cli("swarm", "init", "--advertise-addr", node.addr, "--plugin", "ca=rootless")
    assert result.returncode != 0, result
    assert result.stderr == f"Error: {rootless} failed in create_root: RuntimeError: HSM offline\n"
    assert_not_initialised(node)

    # No CA plugin serves the protocol: one line saying which protocols the installed ones serve.
    result = node.cli(
        "swarm",
        "init",
        "--advertise-addr",
        node.addr,
        "--external-ca",
        "protocol=nope,url=https://127.0.0.1:9/sign",
    )
    assert result.returncode != 0, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "Error: --external-ca protocol=nope: no installed CA plugin serves it; installed CA plugins serve: "
    ), result.stderr
    assert 'cfssl (plugin "cfssl")' in result.stderr
    assert_not_initialised(node)


def test_broken_scheduler_stops_the_daemon(node_factory: Factory, tmp_path: Path) -> None:
    """A swarm whose scheduler plugin breaks: the daemon's start fails with one line, whether
    the plugin breaks at the start's check or only when the manager becomes leader."""
    site = tmp_path / "site"
    label = install(site, "variable", HEALTHY)
    node = node_factory(env=site_env(site)).start()
    node.init("--plugin", "scheduler=variable")
    node.stop()

    for source, reason in [
        *((src, why) for _, src, why in BROKEN),
        (FAILS_WHEN_LEADING, f"failed to build its provider in {HOOK}: RuntimeError: fails when leading"),
    ]:
        install(site, "variable", source)
        before = len(node.log_text())
        node.start(wait=False)
        assert node.proc is not None
        assert node.proc.wait(60) == 2, node.log_text()[before:]
        lines = [line for line in node.log_text()[before:].splitlines() if "variable" in line]
        assert lines == [f"Error: {label} {reason}"], node.log_text()[before:]

    install(site, "variable", HEALTHY)
    node.start()
    wait_until(lambda: node.info().get("IsLeader"), 30, what="the repaired manager to lead")
    rows = [
        row for row in node.ok("plugin", "ls", "--format", "json").json_lines() if row["Name"] == "variable"
    ]
    assert [json.dumps(row["Error"]) for row in rows] == ['""']

    # The swarm's CA plugin (internal, fixed at init) serves no --external-ca protocol: an
    # update naming one is refused with one line instead of being recorded and ignored.
    result = node.cli("swarm", "update", "--external-ca", "protocol=cfssl,url=https://127.0.0.1:9/sign")
    assert result.returncode != 0, result
    assert result.stderr == (
        'Error: --external-ca protocol=cfssl: this swarm\'s CA plugin "internal" (chosen at swarm init) '
        "does not serve it; it serves no --external-ca protocol (it signs with the cluster root)\n"
    )


def test_promotion_refused_when_the_swarms_scheduler_cannot_be_built(
    node_factory: Factory, tmp_path: Path
) -> None:
    """A worker promoted to manager checks the swarm's plugins before it stops its worker part:
    a scheduler its daemon cannot build refuses the promotion with one line, and the node goes
    on running as a worker (it used to stop its agent and stay dead, or become a manager that
    could never lead)."""
    manager_site, worker_site = tmp_path / "manager-site", tmp_path / "worker-site"
    install(manager_site, "variable", HEALTHY)
    label = install(worker_site, "variable", RAISES)
    manager = node_factory(name="mgr", env=site_env(manager_site)).start()
    manager.init("--plugin", "scheduler=variable")
    worker = node_factory(name="wrk", host="127.0.0.2", env=site_env(worker_site)).start()
    worker.join(manager)

    manager.ok("node", "promote", "wrk")
    line = f"could not change this node's role: {label} failed to build its provider in {HOOK}: RuntimeError"
    wait_until(lambda: line in worker.log_text(), 60, what="the worker to refuse its promotion")
    assert worker.info()["Role"] == "worker"
    assert worker.info()["AgentConnected"]
    rows = {row["Hostname"]: row for row in manager.ok("node", "ls", "--format", "json").json_lines()}
    assert rows["wrk"]["Status"] == "Ready", rows
