"""``shoal plugin ls`` and the CLI's one-line errors.

The listing tests run ``python -S -m shoal.cli.plugin_cmd`` in a subprocess whose ``sys.path``
holds only throwaway distributions (real ``*.dist-info`` folders) and symlinks to the packages
the kernel needs, so what is installed in the venv does not change the output.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click
import pytest
import shoal
from click.testing import CliRunner
from shoal.cli.errors import fail, handle_errors
from shoal.loader import PluginError
from shoal.roles.base import API_VERSIONS

DEFAULT_NAMES = {
    "store": "raft",
    "scheduler": "spread",
    "ca": "internal",
    "runtime": "docker",
    "secrets": "internal",
    "transport": "grpc",
    "network": "overlay",
}
PROTOCOLS = {
    "store": "StoreProvider",
    "scheduler": "SchedulerProvider",
    "network": "NetworkProvider",
    "ca": "CAProvider",
    "runtime": "RuntimeProvider",
    "secrets": "SecretsProvider",
    "transport": "TransportProvider",
}


def plugin_source(role: str, api_version: int | None = None) -> str:
    if api_version is None:
        api_version = API_VERSIONS[role]
    return (
        "from shoal import hookimpl\n"
        f"from shoal.roles import {PROTOCOLS[role]}\n"
        f"class Provider({PROTOCOLS[role]}):\n"
        f"    role = {role!r}\n"
        f"    api_version = {api_version}\n"
        "PROVIDER_CLASS = Provider\n"
        "@hookimpl\n"
        f"def shoal_{role}_provider(context):\n"
        "    return Provider()\n"
    )


class Site:
    """Throwaway distributions in a temporary site directory, and a hermetic interpreter."""

    def __init__(self, root: Path, deps: Path) -> None:
        self.root = root
        self.deps = deps

    def dist(self, name: str, version: str, group: str, ep_name: str, source: str) -> None:
        site = self.root / "site"
        module = "tp_" + name.replace("-", "_")
        site.mkdir(exist_ok=True)
        (site / f"{module}.py").write_text(source)
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{ep_name} = {module}\n")

    def shoal_plugin(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.python("-m", "shoal.cli.plugin_cmd", *args, env=env)

    def python(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join([str(self.root / "site"), str(self.deps)]),
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-S", *args],
            cwd=self.root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Symlinks to only the import packages the CLI needs (no dist-info at all)."""
    d = tmp_path_factory.mktemp("deps")
    for name in ("pluggy", "stevedore", "click"):
        module = importlib.import_module(name)
        assert module.__file__ is not None
        (d / name).symlink_to(Path(module.__file__).parent)
    protobuf = importlib.import_module("google.protobuf")
    assert protobuf.__file__ is not None
    (d / "google").symlink_to(Path(protobuf.__file__).parents[1])
    assert shoal.__file__ is not None
    (d / "shoal").symlink_to(Path(shoal.__file__).parent)
    return d


@pytest.fixture
def site(tmp_path: Path, deps: Path) -> Site:
    return Site(tmp_path, deps)


@pytest.fixture
def full_site(site: Site) -> Site:
    """Every default plugin installed, plus a second runtime."""
    for role, name in DEFAULT_NAMES.items():
        site.dist(f"shoal-{role}-{name}", "0.1.0", f"shoal.{role}", name, plugin_source(role))
    site.dist("shoal-runtime-podman", "0.2.0", "shoal.runtime", "podman", plugin_source("runtime"))
    return site


def test_ls_table_matches_docker_style(full_site: Site) -> None:
    proc = full_site.shoal_plugin("ls")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "ROLE        NAME       DISTRIBUTION             VERSION   API   SELECTED\n"
        "store       raft       shoal-store-raft         0.1.0     3     *\n"
        "scheduler   spread     shoal-scheduler-spread   0.1.0     2     *\n"
        "ca          internal   shoal-ca-internal        0.1.0     2     *\n"
        "runtime     docker     shoal-runtime-docker     0.1.0     2     *\n"
        "runtime     podman     shoal-runtime-podman     0.2.0     2\n"
        "secrets     internal   shoal-secrets-internal   0.1.0     2     *\n"
        "transport   grpc       shoal-transport-grpc     0.1.0     1     *\n"
        "network     overlay    shoal-network-overlay    0.1.0     1     *\n"
    )


def test_ls_json_one_object_per_line(full_site: Site) -> None:
    proc = full_site.shoal_plugin("ls", "--format", "json", "--plugin", "runtime=podman")
    assert (proc.returncode, proc.stderr) == (0, "")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 8
    assert all(
        list(row) == ["Role", "Name", "Distribution", "Version", "APIVersion", "Selected", "Error"]
        for row in rows
    )
    runtime = {row["Name"]: row for row in rows if row["Role"] == "runtime"}
    assert runtime["podman"] == {
        "Role": "runtime",
        "Name": "podman",
        "Distribution": "shoal-runtime-podman",
        "Version": "0.2.0",
        "APIVersion": 2,
        "Selected": True,
        "Error": "",
    }
    assert runtime["docker"]["Selected"] is False


def selected(proc: subprocess.CompletedProcess[str], role: str) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return [row["Name"] for row in rows if row["Role"] == role and row["Selected"]]


def test_ls_selection_precedence(full_site: Site) -> None:
    env = {"SHOAL_PLUGINS": "runtime=podman"}
    assert selected(full_site.shoal_plugin("ls", "--format", "json"), "runtime") == ["docker"]
    assert selected(full_site.shoal_plugin("ls", "--format", "json", env=env), "runtime") == ["podman"]
    cli_over_env = full_site.shoal_plugin("ls", "--format", "json", "--plugin", "runtime=docker", env=env)
    assert selected(cli_over_env, "runtime") == ["docker"]


def test_ls_takes_the_config_table_from_the_root_context(full_site: Site) -> None:
    code = (
        "import json\n"
        "from click.testing import CliRunner\n"
        "from shoal.cli.plugin_cmd import plugin\n"
        "def run(*args):\n"
        "    r = CliRunner().invoke(plugin, ['ls', '--format', 'json', *args],\n"
        "                           obj={'config_plugins': {'runtime': 'podman'}})\n"
        "    assert r.exit_code == 0, r.output\n"
        "    return [json.loads(l)['Name'] for l in r.output.splitlines()\n"
        "            if json.loads(l)['Role'] == 'runtime' and json.loads(l)['Selected']]\n"
        "print(json.dumps([run(), run('--plugin', 'runtime=docker')]))\n"
    )
    proc = full_site.python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["podman"], ["docker"]]


def test_ls_shows_broken_plugins_in_their_row(site: Site) -> None:
    site.dist("shoal-runtime-broken", "1.0", "shoal.runtime", "broken", "import xyz\n")
    site.dist(
        "shoal-runtime-next",
        "3.0",
        "shoal.runtime",
        "next",
        plugin_source("runtime", api_version=API_VERSIONS["runtime"] + 1),
    )
    proc = site.shoal_plugin("ls")
    assert (proc.returncode, proc.stderr) == (0, "")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ROLE", "NAME", "DISTRIBUTION", "VERSION", "API", "SELECTED", "ERROR"]
    runtime = [line.split(None, 5) for line in lines if line.startswith("runtime ")]
    assert runtime == [
        ["runtime", "broken", "shoal-runtime-broken", "1.0", "-",
         "failed to import: ModuleNotFoundError: No module named 'xyz'"],
        ["runtime", "next", "shoal-runtime-next", "3.0", "3",
         "implements runtime API version 3, but this shoal speaks version 2"],
        ["runtime", "docker", "-", "-", "-", "*          not installed"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--plugin", "runtime"],
            {},
            'Error: --plugin expects ROLE=NAME (for example --plugin runtime=podman), got "runtime"',
        ),
        (
            ["--plugin", "gpu=nvidia"],
            {},
            'Error: unknown plugin role "gpu" in --plugin gpu=nvidia; '
            "roles are: store, scheduler, ca, runtime, secrets, transport, network",
        ),
        (
            [],
            {"SHOAL_PLUGINS": "runtime=docker,oops"},
            "Error: SHOAL_PLUGINS expects ROLE=NAME (for example "
            'SHOAL_PLUGINS=runtime=podman,scheduler=spread), got "oops"',
        ),
    ],
)
def test_ls_bad_selection_is_one_line_exit_2(
    full_site: Site, args: list[str], env: dict[str, str], message: str
) -> None:
    proc = full_site.shoal_plugin("ls", *args, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", message + "\n")


# --------------------------------------------------------------------------- errors helper


def make_command(exc: BaseException) -> click.Command:
    @click.command()
    @handle_errors
    def cmd() -> None:
        raise exc

    return cmd


@pytest.mark.parametrize(
    ("exc", "stderr"),
    [
        (PluginError("unknown runtime plugin\n  \"x\""), 'Error: unknown runtime plugin "x"\n'),
        (FileNotFoundError(2, "No such file or directory", "/etc/shoal.toml"),
         "Error: No such file or directory: /etc/shoal.toml\n"),
        (ConnectionRefusedError(111, "Connection refused"), "Error: Connection refused\n"),
    ],
)  # fmt: skip
def test_handle_errors_turns_known_errors_into_one_line(exc: BaseException, stderr: str) -> None:
    result = CliRunner().invoke(make_command(exc))
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", stderr)


def test_handle_errors_lets_bugs_and_click_errors_through() -> None:
    result = CliRunner().invoke(make_command(KeyError("bug")))
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)
    result = CliRunner().invoke(make_command(click.UsageError("bad flag")))
    assert result.exit_code == 2
    assert "Usage:" in result.stderr and "bad flag" in result.stderr


def test_fail_uses_the_given_code() -> None:
    @click.command()
    def cmd() -> None:
        fail("node not found:\n abc", code=1)

    result = CliRunner().invoke(cmd)
    assert (result.exit_code, result.stderr) == (1, "Error: node not found: abc\n")


def test_broken_pipe_ends_quietly() -> None:
    result = CliRunner().invoke(make_command(BrokenPipeError(32, "Broken pipe")))
    assert (result.exit_code, result.stderr) == (1, "")


def test_ls_builds_each_plugin_with_the_given_options(site: Site) -> None:
    """A factory that raises shows in its row; ``--plugin-opt`` reaches the factory as the
    daemon's would, so a plugin that needs an option is not shown broken when it is given."""
    needs_host = plugin_source("runtime").replace(
        "    return Provider()\n",
        "    if 'host' not in context.options:\n"
        "        raise ValueError('set --plugin-opt runtime.host=URL')\n"
        "    return Provider()\n",
    )
    site.dist("shoal-runtime-remote", "1.0", "shoal.runtime", "remote", needs_host)

    def remote_error(*args: str) -> str:
        proc = site.shoal_plugin("ls", "--format", "json", *args)
        assert (proc.returncode, proc.stderr) == (0, "")
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        return str(next(r["Error"] for r in rows if r["Name"] == "remote"))

    assert remote_error() == (
        "failed to build its provider in shoal_runtime_provider: ValueError: set --plugin-opt runtime.host=URL"
    )
    assert remote_error("--plugin-opt", "runtime.host=unix:///x.sock") == ""
