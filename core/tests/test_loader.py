"""The plugin loader against real installed distributions.

Each test writes throwaway distributions (real ``*.dist-info`` folders with ``METADATA`` and
``entry_points.txt``) into a temporary site directory and runs the loader in a fresh
``python -S`` subprocess whose ``sys.path`` holds only those sites plus symlinks to the packages
the kernel needs. So the test process's metadata is never polluted, and the plugins the other
engineers are installing into the venv cannot change what these tests see.

Every plugin module appends its name to ``imports.log`` when imported, and every provider
appends ``built <name>`` when constructed: that is how "only the selected plugin is imported"
and "listing builds each sound plugin's provider once" are checked.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import shoal
from shoal.loader import (
    DEFAULT_SELECTION,
    PluginError,
    PluginLoader,
    load_config_plugins,
    parse_plugin_args,
    parse_plugin_options,
    resolve_selection,
)
from shoal.roles.base import API_VERSIONS, ROLES

# --------------------------------------------------------------------------- harness

PROTOCOLS = {
    "store": "StoreProvider",
    "scheduler": "SchedulerProvider",
    "ca": "CAProvider",
    "runtime": "RuntimeProvider",
    "secrets": "SecretsProvider",
    "transport": "TransportProvider",
}


def plugin_source(
    role: str,
    *,
    declared_role: str | None = None,
    api_version: int | None = None,
    factory: str | None = "return Provider(context)",
    async_factory: bool = False,
    hook_name: str | None = None,
    params: str = "context",
    subclass_protocol: bool = True,
    provider_class: bool = True,
    preamble: str = "",
) -> str:
    """A role plugin module; every knob makes one kind of broken plugin."""
    base = PROTOCOLS[role] if subclass_protocol else "object"
    lines = [
        "from pathlib import Path",
        "from shoal import hookimpl",
        f"from shoal.roles import {PROTOCOLS[role]}",
        "with open('imports.log', 'a') as fh:",
        "    fh.write(__name__ + '\\n')",
        preamble,
        f"class Provider({base}):",
        f"    role = {declared_role or role!r}",
        f"    api_version = {API_VERSIONS[role] if api_version is None else api_version}",
        "    def __init__(self, context):",
        "        self.context = context",
        "        with open('imports.log', 'a') as fh:",
        "            fh.write('built ' + __name__ + '\\n')",
    ]
    if provider_class:
        lines.append("PROVIDER_CLASS = Provider")
    if factory is not None:
        lines += [
            "@hookimpl",
            f"{'async ' if async_factory else ''}def {hook_name or f'shoal_{role}_provider'}({params}):",
            f"    {factory}",
        ]
    return "\n".join(lines) + "\n"


class Site:
    """Temporary site directories of throwaway distributions, and a hermetic interpreter."""

    def __init__(self, root: Path, deps: Path) -> None:
        self.root = root
        self.deps = deps
        self.sites: list[Path] = []

    def dist(
        self,
        name: str,
        version: str,
        entry_points: Mapping[str, Mapping[str, str]],
        modules: Mapping[str, str],
        site: str = "site1",
    ) -> None:
        """Install distribution ``name`` into ``site``: its modules and a real dist-info."""
        where = self.root / site
        if where not in self.sites:
            self.sites.append(where)
        for module, source in modules.items():
            path = where / (module.replace(".", "/") + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        info = where / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        text = ""
        for group, eps in entry_points.items():
            text += f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) + "\n"
        (info / "entry_points.txt").write_text(text)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join([*map(str, self.sites), str(self.deps)]),
        }
        env.update(extra or {})
        return env

    def python(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", *args],
            cwd=self.root,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def run(self, body: str) -> object:
        """Run ``body`` (which sets ``result``) with the loader imported; return ``result``."""
        code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(result))\n"
        proc = self.python("-c", code)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def imports(self) -> list[str]:
        log = self.root / "imports.log"
        return log.read_text().splitlines() if log.exists() else []


PRELUDE = """
import json, sys
from pathlib import Path
from shoal.loader import PluginError, PluginLoader, list_installed
from shoal.roles.base import PluginContext

def ctx(role, **options):
    return PluginContext(role=role, name="", state_dir=Path("state") / role, options=options)

def error_of(role, selection, options=None):
    try:
        PluginLoader(selection, options).provider(role, ctx(role))
    except PluginError as exc:
        return str(exc)
    return None
"""


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Symlinks to only the import packages the loader and CLI need (no dist-info at all)."""
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


def runtime_dist(site: Site, name: str, source: str, dist: str | None = None, version: str = "1.0") -> None:
    module = f"tp_runtime_{name}"
    site.dist(dist or f"shoal-runtime-{name}", version, {"shoal.runtime": {name: module}}, {module: source})


# --------------------------------------------------------------------------- selection (pure)


def test_parse_plugin_args() -> None:
    assert parse_plugin_args(["runtime=podman", " scheduler = binpack "]) == {
        "runtime": "podman",
        "scheduler": "binpack",
    }
    assert parse_plugin_args([]) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["runtime"], '--plugin expects ROLE=NAME (for example --plugin runtime=podman), got "runtime"'),
        (["runtime="], '--plugin expects ROLE=NAME (for example --plugin runtime=podman), got "runtime="'),
        (["=podman"], '--plugin expects ROLE=NAME (for example --plugin runtime=podman), got "=podman"'),
        (
            ["gpu=nvidia"],
            'unknown plugin role "gpu" in --plugin gpu=nvidia; '
            "roles are: store, scheduler, ca, runtime, secrets, transport, network",
        ),
        (
            ["runtime=docker", "runtime=podman"],
            '--plugin names two runtime plugins ("docker" and "podman"); give one',
        ),
    ],
)
def test_parse_plugin_args_errors(values: list[str], message: str) -> None:
    with pytest.raises(PluginError) as err:
        parse_plugin_args(values)
    assert str(err.value) == message


def test_parse_plugin_options() -> None:
    assert parse_plugin_options(
        ["runtime.host=unix:///run/podman/podman.sock", "runtime.label=a=b", "ca.url=https://x:8888"]
    ) == {
        "runtime": {"host": "unix:///run/podman/podman.sock", "label": "a=b"},
        "ca": {"url": "https://x:8888"},
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["runtime=host"],
            "--plugin-opt expects ROLE.KEY=VALUE (for example --plugin-opt "
            'runtime.host=unix:///run/podman/podman.sock), got "runtime=host"',
        ),
        (
            ["runtime.host"],
            "--plugin-opt expects ROLE.KEY=VALUE (for example --plugin-opt "
            'runtime.host=unix:///run/podman/podman.sock), got "runtime.host"',
        ),
        (
            ["gpu.count=2"],
            'unknown plugin role "gpu" in --plugin-opt gpu.count=2; '
            "roles are: store, scheduler, ca, runtime, secrets, transport, network",
        ),
        (
            ["runtime.host=a", "runtime.host=b"],
            '--plugin-opt runtime.host given twice ("a" and "b"); give it once',
        ),
    ],
)
def test_parse_plugin_options_errors(values: list[str], message: str) -> None:
    with pytest.raises(PluginError) as err:
        parse_plugin_options(values)
    assert str(err.value) == message


def test_selection_precedence_cli_over_env_over_config_over_defaults() -> None:
    config = {"runtime": "c-runtime", "scheduler": "c-sched", "ca": "c-ca"}
    env = "runtime=e-runtime, scheduler=e-sched,"
    cli = {"runtime": "cli-runtime"}
    assert resolve_selection(cli, env, config) == {
        **DEFAULT_SELECTION,
        "runtime": "cli-runtime",
        "scheduler": "e-sched",
        "ca": "c-ca",
    }
    assert resolve_selection(None, None, None) == DEFAULT_SELECTION
    assert resolve_selection(["runtime=podman"], None, None)["runtime"] == "podman"
    assert set(resolve_selection(None, None, None)) == set(ROLES)


def test_selection_reads_shoal_plugins_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_PLUGINS", "runtime=podman,ca=cfssl")
    selection = resolve_selection(config={"ca": "internal"})
    assert (selection["runtime"], selection["ca"]) == ("podman", "cfssl")
    assert resolve_selection(env=None)["runtime"] == "docker"
    monkeypatch.setenv("SHOAL_PLUGINS", "runtime")
    with pytest.raises(PluginError, match=r"^SHOAL_PLUGINS expects ROLE=NAME .*got \"runtime\"$"):
        resolve_selection()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"gpu": "x"},
            'unknown plugin role "gpu" in the config file\'s [plugins] table; '
            "roles are: store, scheduler, ca, runtime, secrets, transport, network",
        ),
        ({"runtime": 3}, 'config file [plugins] runtime must be a plugin name such as "docker", got 3'),
    ],
)
def test_config_table_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(PluginError) as err:
        resolve_selection(None, None, config)
    assert str(err.value) == message


def test_load_config_plugins(tmp_path: Path) -> None:
    good = tmp_path / "shoal.toml"
    good.write_text('[plugins]\nruntime = "podman"\n\n[other]\nx = 1\n')
    assert load_config_plugins(good) == {"runtime": "podman"}
    assert resolve_selection(None, None, load_config_plugins(good))["runtime"] == "podman"
    (tmp_path / "empty.toml").write_text("")
    assert load_config_plugins(tmp_path / "empty.toml") == {}
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins\n")
    with pytest.raises(PluginError, match=r"^config file .*bad.toml is not valid TOML: "):
        load_config_plugins(bad)
    with pytest.raises(PluginError, match=r"^cannot read config file .*missing.toml: No such file"):
        load_config_plugins(tmp_path / "missing.toml")


def test_loader_refuses_unknown_roles() -> None:
    with pytest.raises(PluginError, match=r'^unknown plugin role "gpu" in the plugin selection; roles are'):
        PluginLoader({"gpu": "x"})
    loader = PluginLoader()
    assert loader.selection == DEFAULT_SELECTION
    with pytest.raises(PluginError, match=r'^unknown plugin role "gpu" in PluginLoader.provider'):
        loader.provider("gpu", loader.make_context("runtime", Path("/nonexistent")))


# --------------------------------------------------------------------------- loading (subprocess)


def test_selected_plugin_is_the_only_one_imported(site: Site) -> None:
    runtime_dist(site, "good", plugin_source("runtime"))
    runtime_dist(site, "broken", "import xyz\n")
    runtime_dist(site, "spy", plugin_source("runtime"))
    result = site.run(
        """
        loader = PluginLoader({"runtime": "good"}, {"runtime": {"host": "h", "depth": "1"}})
        first = loader.provider("runtime", ctx("runtime", depth="2"))
        second = loader.provider("runtime", ctx("runtime"))
        result = {
            "type": type(first).__module__,
            "name": first.context.name,
            "options": first.context.options,
            "state_dir": first.context.state_dir.is_dir(),
            "distinct": first is not second,
            "modules": sorted(m for m in sys.modules if m.startswith("tp_")),
            "installed": loader.installed_names("runtime"),
        }
        """
    )
    assert result == {
        "type": "tp_runtime_good",
        "name": "good",
        "options": {"host": "h", "depth": "2"},
        "state_dir": True,
        "distinct": True,
        "modules": ["tp_runtime_good"],
        "installed": ["broken", "good", "spy"],
    }
    # imported once although the provider was built twice
    assert site.imports() == ["tp_runtime_good", "built tp_runtime_good", "built tp_runtime_good"]


def test_unknown_plugin_name_lists_installed_names(site: Site) -> None:
    runtime_dist(site, "podman", plugin_source("runtime"))
    runtime_dist(site, "docker", plugin_source("runtime"))
    result = site.run(
        """
        result = [error_of("runtime", {"runtime": "nope"}), error_of("store", {"store": "raft"})]
        """
    )
    assert result == [
        'unknown runtime plugin "nope"; installed runtime plugins: docker, podman '
        "(choose one with --plugin runtime=NAME)",
        'unknown store plugin "raft"; installed store plugins: none (choose one with --plugin store=NAME)',
    ]
    assert site.imports() == []


def test_import_failure_names_distribution_and_cause(site: Site) -> None:
    runtime_dist(site, "broken", "import xyz\n")
    assert site.run('result = error_of("runtime", {"runtime": "broken"})') == (
        'runtime plugin "broken" from distribution shoal-runtime-broken 1.0 failed to import: '
        "ModuleNotFoundError: No module named 'xyz'"
    )


def test_import_failure_with_multiline_message_is_one_line(site: Site) -> None:
    runtime_dist(site, "loud", "raise RuntimeError('first line\\n  second line')\n")
    assert site.run('result = error_of("runtime", {"runtime": "loud"})') == (
        'runtime plugin "loud" from distribution shoal-runtime-loud 1.0 failed to import: '
        "RuntimeError: first line second line"
    )


def test_duplicate_names_are_refused_before_any_import(site: Site) -> None:
    site.dist(
        "shoal-runtime-docker",
        "0.1.0",
        {"shoal.runtime": {"docker": "tp_docker_a"}},
        {"tp_docker_a": plugin_source("runtime")},
        site="site1",
    )
    site.dist(
        "acme-runtime",
        "2.0",
        {"shoal.runtime": {"docker": "tp_docker_b"}},
        {"tp_docker_b": plugin_source("runtime")},
        site="site2",
    )
    runtime_dist(site, "podman", plugin_source("runtime"))
    result = site.run(
        """
        ok = PluginLoader({"runtime": "podman"}).provider("runtime", ctx("runtime"))
        result = [error_of("runtime", {"runtime": "docker"}), type(ok).__module__]
        """
    )
    assert result == [
        'runtime plugin name "docker" is registered by two distributions: shoal-runtime-docker 0.1.0 '
        "and acme-runtime 2.0; uninstall one of them",
        "tp_runtime_podman",
    ]
    assert "tp_docker_a" not in site.imports()
    assert "tp_docker_b" not in site.imports()


BROKEN_PROVIDERS = [
    pytest.param(
        {"declared_role": "scheduler"},
        'plugin "x" (distribution d 1.0) in group shoal.runtime returned a provider for role '
        '"scheduler", not "runtime" (built by shoal_runtime_provider)',
        id="wrong-role",
    ),
    pytest.param(
        {"api_version": 3},
        'runtime plugin "x" (distribution d 1.0) implements runtime API version 3, but this shoal '
        "speaks version 2 (built by shoal_runtime_provider)",
        id="wrong-api-version",
    ),
    pytest.param(
        {"factory": "return None"},
        'runtime plugin "x" (distribution d 1.0) returned None from shoal_runtime_provider; it must '
        "return a runtime provider",
        id="returns-none",
    ),
    pytest.param(
        {"factory": None},
        'runtime plugin "x" (distribution d 1.0) does not implement the hook shoal_runtime_provider',
        id="no-factory-hook",
    ),
    pytest.param(
        {"factory": "raise ValueError('bad option host:\\n  use unix://')"},
        'runtime plugin "x" (distribution d 1.0) failed to build its provider in shoal_runtime_provider: '
        "ValueError: bad option host: use unix://",
        id="factory-raises",
    ),
    pytest.param(
        {"async_factory": True},
        'runtime plugin "x" (distribution d 1.0) returned an awaitable from shoal_runtime_provider; '
        "factory hooks must not be async",
        id="async-factory",
    ),
    pytest.param(
        {"subclass_protocol": False},
        'runtime plugin "x" (distribution d 1.0) provides a Provider that lacks runtime API methods: '
        "describe, prepare, start, wait, shutdown, remove, list_containers, logs, close "
        "(built by shoal_runtime_provider)",
        id="missing-methods",
    ),
    pytest.param(
        {"preamble": "class Plain:\n    pass\n", "factory": "return Plain()"},
        'runtime plugin "x" (distribution d 1.0) provides a Plain that does not declare role (str) and '
        "api_version (int) class attributes (built by shoal_runtime_provider)",
        id="no-declaration",
    ),
    pytest.param(
        {"hook_name": "shoal_runtime_provder"},
        'runtime plugin "x" (distribution d 1.0) implements shoal_runtime_provder, which is not a shoal hook',
        id="misspelt-hook",
    ),
    pytest.param(
        {"params": "context, extra"},
        'runtime plugin "x" (distribution d 1.0) has an invalid hook implementation: Plugin ',
        id="bad-hook-signature",
    ),
]


@pytest.mark.parametrize(("knobs", "message"), BROKEN_PROVIDERS)
def test_broken_provider_is_refused_with_one_line(site: Site, knobs: dict[str, object], message: str) -> None:
    source = plugin_source("runtime", **knobs)  # type: ignore[arg-type]
    site.dist("d", "1.0", {"shoal.runtime": {"x": "tp_x"}}, {"tp_x": source})
    error = site.run('result = error_of("runtime", {"runtime": "x"})')
    assert isinstance(error, str)
    assert "\n" not in error
    if "hook_name" in knobs:  # the rest lists the known hooks
        assert error.startswith(message + " (known hooks: shoal_ca_provider, shoal_cli_commands, "), error
    elif "params" in knobs:  # the rest is pluggy's explanation, folded to one line
        assert error.startswith(message) and "'extra'" in error, error
    else:
        assert error == message


def test_only_the_selected_plugins_factory_is_called(site: Site) -> None:
    """An extension (or another role plugin) implementing the same factory hook is not asked."""
    runtime_dist(site, "good", plugin_source("runtime"))
    hijack = (
        "from shoal import hookimpl\n"
        "@hookimpl(tryfirst=True)\n"
        "def shoal_runtime_provider(context):\n"
        "    return 'hijacked'\n"
    )
    site.dist("hijack", "1.0", {"shoal.extensions": {"hijack": "tp_hijack"}}, {"tp_hijack": hijack})
    result = site.run(
        """
        loader = PluginLoader({"runtime": "good"})
        names = loader.load_extensions()
        result = [names, type(loader.provider("runtime", ctx("runtime"))).__module__]
        """
    )
    assert result == [["hijack"], "tp_runtime_good"]


def test_extensions_take_part_in_call_all_hooks(site: Site) -> None:
    def ext(n: int) -> str:
        return (
            f"from shoal import hookimpl\n@hookimpl\ndef shoal_node_filters():\n    return ['filter-{n}']\n"
        )

    site.dist("ext-one", "1.0", {"shoal.extensions": {"one": "tp_ext_one"}}, {"tp_ext_one": ext(1)})
    site.dist("ext-two", "1.0", {"shoal.extensions": {"two": "tp_ext_two"}}, {"tp_ext_two": ext(2)})
    runtime_dist(
        site,
        "good",
        plugin_source("runtime", preamble="@hookimpl\ndef shoal_node_filters():\n    return ['filter-rt']\n"),
    )
    result = site.run(
        """
        loader = PluginLoader({"runtime": "good"})
        loader.load_extensions()
        loader.load_extensions()  # idempotent
        before = sorted(f for fs in loader.hook.shoal_node_filters() for f in fs)
        loader.provider("runtime", ctx("runtime"))
        after = sorted(f for fs in loader.hook.shoal_node_filters() for f in fs)
        result = [before, after]
        """
    )
    assert result == [["filter-1", "filter-2"], ["filter-1", "filter-2", "filter-rt"]]


def test_broken_extension_is_reported(site: Site) -> None:
    site.dist(
        "ext-bad", "3.1", {"shoal.extensions": {"bad": "tp_ext_bad"}}, {"tp_ext_bad": "import nothere\n"}
    )
    result = site.run(
        """
        try:
            PluginLoader().load_extensions()
            result = None
        except PluginError as exc:
            result = str(exc)
        """
    )
    assert result == (
        'extension plugin "bad" from distribution ext-bad 3.1 failed to import: '
        "ModuleNotFoundError: No module named 'nothere'"
    )


def test_one_module_may_serve_two_roles(site: Site) -> None:
    both = plugin_source("ca") + textwrap.dedent(
        """
        from shoal.roles import SecretsProvider
        class Secrets(SecretsProvider):
            role = "secrets"
            api_version = 2
            takes_value = True
        @hookimpl
        def shoal_secrets_provider(context):
            return Secrets()
        """
    )
    site.dist(
        "shoal-internal",
        "1.0",
        {"shoal.ca": {"internal": "tp_both"}, "shoal.secrets": {"internal": "tp_both"}},
        {"tp_both": both},
    )
    result = site.run(
        """
        loader = PluginLoader()
        result = [loader.provider("ca", ctx("ca")).role, loader.provider("secrets", ctx("secrets")).role]
        """
    )
    assert result == ["ca", "secrets"]


# --------------------------------------------------------------------------- listing


def test_list_installed_reads_provider_class_and_builds_each_healthy_plugin(site: Site) -> None:
    """Each plugin whose declaration is sound is built once (in a throwaway directory), so a
    factory that raises or a missing factory hook shows in its row, as a daemon would meet it."""
    runtime_dist(site, "good", plugin_source("runtime"), version="0.3.0")
    runtime_dist(site, "raises", plugin_source("runtime", factory="raise RuntimeError('no\\n engine')"))
    runtime_dist(site, "nohook", plugin_source("runtime", factory=None))
    runtime_dist(site, "broken", "import xyz\n")
    runtime_dist(site, "future", plugin_source("runtime", api_version=API_VERSIONS["runtime"] + 1))
    runtime_dist(site, "noclass", plugin_source("runtime", provider_class=False))
    site.dist(
        "sched-bin",
        "0.9",
        {"shoal.scheduler": {"binpack": "tp_binpack"}},
        {"tp_binpack": plugin_source("scheduler")},
    )
    site.dist("ext-one", "1.0", {"shoal.extensions": {"one": "tp_ext_one"}}, {"tp_ext_one": "x = 1\n"})
    rows = site.run(
        """
        result = [
            [r.role, r.name, r.distribution, r.version, r.api_version, r.selected, r.error]
            for r in list_installed({"runtime": "good", "scheduler": "spread"})
        ]
        """
    )
    assert rows == [
        ["store", "raft", "", "", None, True, "not installed"],
        ["scheduler", "binpack", "sched-bin", "0.9", 2, False, ""],
        ["scheduler", "spread", "", "", None, True, "not installed"],
        ["ca", "internal", "", "", None, True, "not installed"],
        ["runtime", "broken", "shoal-runtime-broken", "1.0", None, False,
         "failed to import: ModuleNotFoundError: No module named 'xyz'"],
        ["runtime", "future", "shoal-runtime-future", "1.0", 3, False,
         "implements runtime API version 3, but this shoal speaks version 2"],
        ["runtime", "good", "shoal-runtime-good", "0.3.0", 2, True, ""],
        ["runtime", "noclass", "shoal-runtime-noclass", "1.0", None, False,
         "module defines no PROVIDER_CLASS (its provider class)"],
        ["runtime", "nohook", "shoal-runtime-nohook", "1.0", 2, False,
         "does not implement the hook shoal_runtime_provider"],
        ["runtime", "raises", "shoal-runtime-raises", "1.0", 2, False,
         "failed to build its provider in shoal_runtime_provider: RuntimeError: no engine"],
        ["secrets", "internal", "", "", None, True, "not installed"],
        ["transport", "grpc", "", "", None, True, "not installed"],
        ["network", "overlay", "", "", None, True, "not installed"],
        ["extension", "one", "ext-one", "1.0", None, True, ""],
    ]  # fmt: skip
    assert [line for line in site.imports() if line.startswith("built")] == [
        "built tp_binpack",
        "built tp_runtime_good",
    ]


def test_list_installed_marks_duplicates(site: Site) -> None:
    site.dist("a-rt", "1.0", {"shoal.runtime": {"docker": "tp_a"}}, {"tp_a": plugin_source("runtime")}, "s1")
    site.dist("b-rt", "2.0", {"shoal.runtime": {"docker": "tp_b"}}, {"tp_b": plugin_source("runtime")}, "s2")
    rows = site.run(
        """
        result = [[r.distribution, r.selected, r.error] for r in list_installed() if r.role == "runtime"]
        """
    )
    assert rows == [
        ["a-rt", True, "name also registered by b-rt 2.0; uninstall one of them"],
        ["b-rt", True, "name also registered by a-rt 1.0; uninstall one of them"],
    ]


# --------------------------------------------------------------------------- checks and declarations


def test_check_builds_the_provider_once_and_leaves_nothing(site: Site) -> None:
    """``check`` is what a daemon runs at start for the providers it builds later."""
    runtime_dist(site, "good", plugin_source("runtime"))
    runtime_dist(site, "raises", plugin_source("runtime", factory="raise RuntimeError('boom')"))
    result = site.run(
        """
        import os
        PluginLoader({"runtime": "good"}).check("runtime")
        try:
            PluginLoader({"runtime": "raises"}).check("runtime")
            error = None
        except PluginError as exc:
            error = str(exc)
        result = [error, sorted(os.listdir("."))]
        """
    )
    assert result == [
        'runtime plugin "raises" (distribution shoal-runtime-raises 1.0) failed to build its provider '
        "in shoal_runtime_provider: RuntimeError: boom",
        ["imports.log", "site1"],  # built in a throwaway directory: nothing left behind
    ]
    assert [line for line in site.imports() if line.startswith("built")] == ["built tp_runtime_good"]


def test_failure_names_the_plugin_and_the_method(site: Site) -> None:
    runtime_dist(site, "good", plugin_source("runtime"))
    message = site.run(
        """
        result = str(PluginLoader({"runtime": "good"}).failure("runtime", "describe", OSError("gone\\nfor good")))
        """
    )
    assert message == (
        'runtime plugin "good" (distribution shoal-runtime-good 1.0) failed in describe: OSError: gone for good'
    )


def ca_dist(site: Site, name: str, protocols: str | None) -> None:
    preamble = "" if protocols is None else f"PROTOCOLS = {protocols}\n"
    source = plugin_source("ca", preamble=preamble)
    if protocols is not None:
        source = source.replace(
            "    api_version = 2\n", "    api_version = 2\n    external_ca_protocols = PROTOCOLS\n"
        )
    module = f"tp_ca_{name}"
    site.dist(f"shoal-ca-{name}", "1.0", {"shoal.ca": {name: module}}, {module: source})


def test_declared_plugins_reads_what_each_ca_serves_without_building(site: Site) -> None:
    ca_dist(site, "internal", None)
    ca_dist(site, "ext", "('acme', 'cfssl')")
    ca_dist(site, "bad", "'cfssl'")
    site.dist(
        "shoal-ca-gone", "1.0", {"shoal.ca": {"gone": "tp_ca_gone"}}, {"tp_ca_gone": "import nothing_here\n"}
    )
    rows = site.run(
        """
        from shoal.loader import declared_plugins
        from shoal.roles.ca import external_ca_protocols
        result = [
            [d.name, d.error, list(external_ca_protocols(d.provider_class)) if d.provider_class else None]
            for d in declared_plugins("ca")
        ]
        """
    )
    assert rows == [
        ["bad", "Provider has a malformed declaration: external_ca_protocols must be a tuple of protocol "
         "names, got 'cfssl'", None],
        ["ext", "", ["acme", "cfssl"]],
        ["gone", "failed to import: ModuleNotFoundError: No module named 'nothing_here'", None],
        ["internal", "", []],
    ]  # fmt: skip
    assert not [line for line in site.imports() if line.startswith("built")]


def test_a_malformed_engine_concurrency_declaration_is_refused(site: Site) -> None:
    source = plugin_source("runtime").replace(
        "    api_version = 2\n", "    api_version = 2\n    engine_concurrency = 0\n"
    )
    runtime_dist(site, "eager", source)
    assert site.run('result = error_of("runtime", {"runtime": "eager"})') == (
        'runtime plugin "eager" (distribution shoal-runtime-eager 1.0) provides a Provider that has a '
        "malformed declaration: engine_concurrency must be an int of at least 1, got 0 (built by "
        "shoal_runtime_provider)"
    )
