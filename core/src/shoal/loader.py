"""Find, select, load and check plugins: the kernel's only door to role implementations.

Every role is an entry-point group (``shoal.<role>``); the entry-point name is the name an
operator selects with ``--plugin role=name``. Discovery reads entry-point *metadata* only
(``importlib.metadata``, which also tells us the distribution that declared each name, something
stevedore's cached entry points have forgotten). Loading goes through stevedore's
``NamedExtensionManager`` restricted to the one chosen entry point, so the module of a plugin that
was not selected is never imported: a broken or slow plugin that nobody asked for costs nothing.
(Two deliberate exceptions import every plugin of a role: ``shoal plugin ls``, and
``declared_plugins`` when a plugin is chosen by what it declares, as ``--external-ca protocol=X``
chooses the CA plugin serving X.)

The loaded module is registered with one pluggy ``PluginManager`` and only *its* factory hook is
called (a subset hook caller), then the returned provider's declared ``role`` and
``api_version`` are checked against ``shoal.roles.API_VERSIONS`` before the kernel touches it.
``PluginLoader.check`` builds a provider once and drops it: daemons check every provider they
will need at start, so a plugin that fails only when built later (a scheduler, built when a
manager becomes leader) still stops the start with its line.

Every failure is a ``PluginError`` whose message is one line naming the role, the plugin, the
distribution and the cause, because the operator's next step is to uninstall, upgrade or
reselect one of those.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import inspect
import os
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol, overload

import pluggy
from stevedore.named import NamedExtensionManager

import shoal.hookspecs
from shoal import roles as _roles
from shoal.roles.base import API_VERSIONS, ROLES, PluginContext, Provider
from shoal.roles.ca import external_ca_protocols
from shoal.roles.runtime import declared_engine_concurrency

if TYPE_CHECKING:
    import logging

    from shoal.roles import (
        CAProvider,
        NetworkProvider,
        RuntimeProvider,
        SchedulerProvider,
        SecretsProvider,
        StoreProvider,
        TransportProvider,
    )

__all__ = [
    "DEFAULT_SELECTION",
    "ENV_VAR",
    "EXTENSIONS_GROUP",
    "FROM_ENVIRON",
    "PROVIDER_CLASS_ATTR",
    "ROLE_GROUPS",
    "DeclaredPlugin",
    "PluginError",
    "PluginLoader",
    "PluginRecord",
    "declared_plugins",
    "factory_hook_name",
    "list_installed",
    "load_config_plugins",
    "parse_plugin_args",
    "parse_plugin_options",
    "resolve_selection",
]

#: Entry-point group per role; the entry-point name is the plugin's selection name.
ROLE_GROUPS: Final[dict[str, str]] = {role: f"shoal.{role}" for role in ROLES}

#: Entry-point group of extension plugins: all of them are loaded, for the call-all hooks.
EXTENSIONS_GROUP: Final = "shoal.extensions"

#: What a daemon runs when nothing else is said.
DEFAULT_SELECTION: Final[dict[str, str]] = {
    "store": "raft",
    "scheduler": "spread",
    "ca": "internal",
    "runtime": "docker",
    "secrets": "internal",
    "transport": "grpc",
    "network": "overlay",
}

#: Environment variable holding ``role=name,role=name``.
ENV_VAR: Final = "SHOAL_PLUGINS"

#: Module-level attribute every role plugin module must define: its provider class. ``shoal
#: plugin ls`` reads ``role`` and ``api_version`` from it before building a provider, and
#: ``declared_plugins`` reads what a plugin serves (e.g. a CA's ``--external-ca`` protocols).
PROVIDER_CLASS_ATTR: Final = "PROVIDER_CLASS"

_PROTOCOLS: Final[dict[str, type]] = {
    "store": _roles.StoreProvider,
    "scheduler": _roles.SchedulerProvider,
    "ca": _roles.CAProvider,
    "runtime": _roles.RuntimeProvider,
    "secrets": _roles.SecretsProvider,
    "transport": _roles.TransportProvider,
    "network": _roles.NetworkProvider,
}

_COUNT_WORDS: Final = {2: "two", 3: "three", 4: "four", 5: "five"}


class PluginError(Exception):
    """A plugin cannot be selected, loaded or used; the message is always a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def factory_hook_name(role: str) -> str:
    """The name of ``role``'s factory hook in ``shoal.hookspecs``."""
    return f"shoal_{role}_provider"


# --------------------------------------------------------------------------- selection


class _FromEnviron(enum.Enum):
    TOKEN = 0


#: Default of ``resolve_selection(env=...)``: read ``SHOAL_PLUGINS`` when called.
FROM_ENVIRON: Final = _FromEnviron.TOKEN

_ROLE_LIST: Final = ", ".join(ROLES)


def parse_plugin_args(values: Sequence[str]) -> dict[str, str]:
    """Parse repeated ``--plugin ROLE=NAME`` values into ``{role: name}``."""
    return _parse_pairs(values, "--plugin")


def parse_plugin_options(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """Parse repeated ``--plugin-opt ROLE.KEY=VALUE`` values into ``{role: {key: value}}``.

    The value may itself contain ``=`` (only the first one separates). Giving the same key two
    different values is refused rather than silently picking one.
    """
    options: dict[str, dict[str, str]] = {}
    for raw in values:
        target, sep, value = raw.partition("=")
        role, dot, key = target.strip().partition(".")
        if not sep or not dot or not role or not key.strip():
            raise PluginError(
                "--plugin-opt expects ROLE.KEY=VALUE (for example "
                f'--plugin-opt runtime.host=unix:///run/podman/podman.sock), got "{raw}"'
            )
        key = key.strip()
        _check_role(role, f"--plugin-opt {raw}")
        previous = options.setdefault(role, {}).get(key)
        if previous is not None and previous != value:
            raise PluginError(
                f'--plugin-opt {role}.{key} given twice ("{previous}" and "{value}"); give it once'
            )
        options[role][key] = value
    return options


def resolve_selection(
    cli: Mapping[str, str] | Sequence[str] | None = None,
    env: str | _FromEnviron | None = FROM_ENVIRON,
    config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Merge the plugin choices: ``--plugin`` > ``SHOAL_PLUGINS`` > config file > defaults.

    :param cli: parsed ``--plugin`` values (``parse_plugin_args``), or the raw strings.
    :param env: ``role=name,role=name``; by default the ``SHOAL_PLUGINS`` environment variable
        at call time; ``None`` ignores the environment.
    :param config: the ``[plugins]`` table of the config file (``{"runtime": "podman"}``).
    :returns: a name for every role.
    """
    selection = dict(DEFAULT_SELECTION)
    if config:
        selection.update(_parse_config(config))
    if env is FROM_ENVIRON:
        env = os.environ.get(ENV_VAR)
    if isinstance(env, str) and env.strip():
        selection.update(_parse_pairs([p for p in env.split(",") if p.strip()], ENV_VAR))
    if cli:
        if isinstance(cli, Mapping):
            cli = [f"{role}={name}" for role, name in cli.items()]
        selection.update(_parse_pairs(cli, "--plugin"))
    return selection


def load_config_plugins(path: Path) -> dict[str, Any]:
    """Read the ``[plugins]`` table of a TOML config file (empty when the table is absent)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise PluginError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"config file {path} is not valid TOML: {exc}") from exc
    table = data.get("plugins", {})
    if not isinstance(table, dict):
        raise PluginError(f"config file {path}: [plugins] must be a table of ROLE = NAME")
    return table


def _parse_pairs(values: Iterable[str], source: str) -> dict[str, str]:
    selection: dict[str, str] = {}
    for raw in values:
        role, sep, name = (part.strip() for part in raw.partition("="))
        if not sep or not role or not _valid_name(name):
            raise PluginError(
                f'{source} expects ROLE=NAME (for example {_example(source)}), got "{raw.strip()}"'
            )
        _check_role(role, f"{source} {raw.strip()}")
        previous = selection.get(role)
        if previous is not None and previous != name:
            raise PluginError(f'{source} names two {role} plugins ("{previous}" and "{name}"); give one')
        selection[role] = name
    return selection


def _parse_config(config: Mapping[str, Any]) -> dict[str, str]:
    selection: dict[str, str] = {}
    for role, name in config.items():
        _check_role(role, "the config file's [plugins] table")
        if not isinstance(name, str) or not _valid_name(name.strip()):
            raise PluginError(
                f'config file [plugins] {role} must be a plugin name such as "{DEFAULT_SELECTION[role]}", '
                f"got {name!r}"
            )
        selection[role] = name.strip()
    return selection


def _example(source: str) -> str:
    if source == ENV_VAR:
        return f"{ENV_VAR}=runtime=podman,scheduler=spread"
    return f"{source} runtime=podman"


def _valid_name(name: str) -> bool:
    return bool(name) and not any(ch.isspace() or ch in ",=" for ch in name)


def _check_role(role: str, where: str) -> None:
    if role not in ROLES:
        raise PluginError(f'unknown plugin role "{role}" in {where}; roles are: {_ROLE_LIST}')


# --------------------------------------------------------------------------- discovery


class _Installed(Protocol):
    """One scan of installed entry points (``importlib.metadata.entry_points()``)."""

    def select(self, *, group: str) -> Iterable[importlib.metadata.EntryPoint]: ...


@dataclass(frozen=True)
class _Candidate:
    """One installed entry point with the distribution that declared it (nothing imported)."""

    entry_point: importlib.metadata.EntryPoint
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.entry_point.name

    @property
    def dist_label(self) -> str:
        return f"{self.distribution} {self.version}".strip()


def _discover(group: str, installed: _Installed | None = None) -> list[_Candidate]:
    """Installed entry points of ``group`` in ``sys.path`` order, read from metadata only.

    ``installed`` is one ``importlib.metadata.entry_points()`` scan to share between groups.
    """
    found: list[_Candidate] = []
    scan = installed if installed is not None else importlib.metadata.entry_points()
    for ep in scan.select(group=group):
        dist = ep.dist
        if dist is None:
            found.append(_Candidate(ep, "unknown distribution", ""))
        else:
            found.append(_Candidate(ep, dist.name, dist.version))
    return found


def _duplicate_error(role_label: str, name: str, same: Sequence[_Candidate]) -> PluginError:
    labels = [c.dist_label for c in same]
    listed = ", ".join(labels[:-1]) + " and " + labels[-1]
    count = _COUNT_WORDS.get(len(same), str(len(same)))
    return PluginError(
        f'{role_label} plugin name "{name}" is registered by {count} distributions: {listed}; '
        "uninstall one of them"
    )


class _ChosenEntryPoints(NamedExtensionManager[Any]):
    """stevedore's name-filtered manager over entry points we already chose.

    stevedore's own listing goes through its on-disk cache, which drops the distribution of each
    entry point and, with its default conflict policy, silently keeps the last of two plugins of
    the same name. We decide names and duplicates from metadata first, then let stevedore do the
    name-checked, failure-reporting load of exactly the entry points chosen.
    """

    def __init__(self, group: str, entry_points: Sequence[importlib.metadata.EntryPoint]) -> None:
        self._chosen = list(entry_points)
        super().__init__(
            namespace=group,
            names=[ep.name for ep in self._chosen],
            name_order=True,
            on_load_failure_callback=_reraise,
            on_missing_entrypoints_callback=None,
        )

    def list_entry_points(self) -> list[importlib.metadata.EntryPoint]:
        return self._chosen


def _reraise(manager: Any, entry_point: Any, exc: BaseException) -> None:
    raise exc


def _import(candidate: _Candidate, role_label: str) -> object:
    """Import one entry point's object; the only place plugin code starts running."""
    try:
        manager = _ChosenEntryPoints(candidate.entry_point.group, [candidate.entry_point])
        return manager.extensions[0].plugin
    except Exception as exc:
        raise PluginError(
            f'{role_label} plugin "{candidate.name}" from distribution {candidate.dist_label} '
            f"failed to import: {_describe(exc)}"
        ) from exc


# --------------------------------------------------------------------------- loader


class PluginLoader:
    """Loads the selected plugin of each role on demand and builds its provider.

    One loader per process: it owns the pluggy ``PluginManager`` that role and extension plugins
    are registered with, and caches every imported plugin module, so asking twice for a role
    imports once (providers are built anew on each ``provider()`` call; the caller keeps them).
    """

    def __init__(
        self,
        selection: Mapping[str, str] | None = None,
        options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        merged = dict(DEFAULT_SELECTION)
        for role, name in (selection or {}).items():
            _check_role(role, "the plugin selection")
            merged[role] = name
        for role in options or {}:
            _check_role(role, "the plugin options")
        self._selection = merged
        self._options = {role: dict(opts) for role, opts in (options or {}).items()}
        self._pm = pluggy.PluginManager(shoal.hookspecs.PROJECT)
        self._pm.add_hookspecs(shoal.hookspecs)
        self._candidates: dict[str, list[_Candidate]] = {}
        self._installed: _Installed | None = None
        self._loaded: dict[tuple[str, str], tuple[object, _Candidate]] = {}
        self._extensions_loaded = False

    @property
    def selection(self) -> dict[str, str]:
        """The plugin name chosen for every role (a copy)."""
        return dict(self._selection)

    @property
    def options(self) -> dict[str, dict[str, str]]:
        """The ``--plugin-opt`` settings per role (a copy)."""
        return {role: dict(opts) for role, opts in self._options.items()}

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, for the call-all hooks (``loader.hook.shoal_node_filters()``)."""
        return self._pm.hook

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for tracing and tests)."""
        return self._pm

    def installed_names(self, role: str) -> list[str]:
        """Names installed for ``role``, sorted (nothing imported)."""
        _check_role(role, "PluginLoader.installed_names")
        return sorted({c.name for c in self._group(ROLE_GROUPS[role])})

    def make_context(
        self,
        role: str,
        state_dir: Path,
        node_id: str = "",
        logger: logging.Logger | None = None,
    ) -> PluginContext:
        """A ``PluginContext`` for ``role``'s selected plugin with its ``--plugin-opt`` options."""
        _check_role(role, "PluginLoader.make_context")
        context = PluginContext(
            role=role,
            name=self._selection[role],
            state_dir=state_dir,
            options=dict(self._options.get(role, {})),
            node_id=node_id,
        )
        if logger is not None:
            context.logger = logger
        return context

    def load(self, role: str) -> object:
        """Import and register ``role``'s selected plugin (once) and return the loaded object."""
        _check_role(role, "PluginLoader.load")
        return self._load_role(role)[0]

    @overload
    def provider(self, role: Literal["store"], context: PluginContext) -> StoreProvider: ...
    @overload
    def provider(self, role: Literal["scheduler"], context: PluginContext) -> SchedulerProvider: ...
    @overload
    def provider(self, role: Literal["ca"], context: PluginContext) -> CAProvider: ...
    @overload
    def provider(self, role: Literal["runtime"], context: PluginContext) -> RuntimeProvider: ...
    @overload
    def provider(self, role: Literal["secrets"], context: PluginContext) -> SecretsProvider: ...
    @overload
    def provider(self, role: Literal["transport"], context: PluginContext) -> TransportProvider: ...
    @overload
    def provider(self, role: Literal["network"], context: PluginContext) -> NetworkProvider: ...
    @overload
    def provider(self, role: str, context: PluginContext) -> Provider: ...

    def provider(self, role: str, context: PluginContext) -> Any:
        """Build ``role``'s provider with the selected plugin's factory hook, and check it.

        Only the selected plugin's implementation of ``shoal_<role>_provider`` is called, even
        if other registered plugins implement it too. ``context.options`` are laid over this
        loader's ``--plugin-opt`` options for the role; ``context.state_dir`` is created.
        """
        _check_role(role, "PluginLoader.provider")
        if context.role != role:
            raise ValueError(f"context is for role {context.role!r}, not {role!r}")
        plugin, candidate = self._load_role(role)
        context = dataclasses.replace(
            context, name=candidate.name, options={**self._options.get(role, {}), **context.options}
        )
        return _call_factory(self._pm, plugin, role, candidate, context)

    def check(self, role: str) -> None:
        """Build ``role``'s provider once, in a throwaway directory, and drop it.

        A daemon calls this for every role it will build later (the scheduler only when it
        becomes leader), so that a plugin that cannot be imported, lacks its factory hook,
        raises in it or declares the wrong API version stops ``swarm init`` or the daemon's
        start with one line, before anything is created or committed, instead of leaving a
        manager that silently never schedules. Factories must therefore build without side
        effects (see ``shoal.hookspecs``).
        """
        _check_role(role, "PluginLoader.check")
        with tempfile.TemporaryDirectory(prefix=f"shoal-check-{role}-") as scratch:
            self.provider(role, self.make_context(role, Path(scratch)))

    def label(self, role: str) -> str:
        """``<role> plugin "<name>" (distribution <dist> <version>)``, for one-line errors."""
        _check_role(role, "PluginLoader.label")
        return self._label(role, self._load_role(role)[1])

    def failure(self, role: str, method: str, exc: BaseException) -> PluginError:
        """A provider method raised something the kernel does not expect: name the plugin.

        Without this the operator sees "internal error" and cannot tell which plugin to fix.
        """
        return PluginError(f"{self.label(role)} failed in {method}: {_describe(exc)}")

    def load_extensions(self) -> list[str]:
        """Import and register every ``shoal.extensions`` plugin (once); returns their names."""
        candidates = self._group(EXTENSIONS_GROUP)
        names = [c.name for c in candidates]
        if not self._extensions_loaded:
            by_name = _group_by_name(candidates)
            for name, same in by_name.items():
                if len(same) > 1:
                    raise _duplicate_error("extension", name, same)
            for candidate in candidates:
                plugin = _import(candidate, "extension")
                self._register(plugin, f"extension:{candidate.name}", self._ext_label(candidate))
            self._extensions_loaded = True
        return names

    # ------------------------------------------------------------------ internals

    def _group(self, group: str) -> list[_Candidate]:
        if group not in self._candidates:
            if self._installed is None:
                self._installed = importlib.metadata.entry_points()
            self._candidates[group] = _discover(group, self._installed)
        return self._candidates[group]

    def _load_role(self, role: str) -> tuple[object, _Candidate]:
        name = self._selection[role]
        cached = self._loaded.get((role, name))
        if cached is not None:
            return cached
        candidate = _select(role, name, self._group(ROLE_GROUPS[role]))
        plugin = _import(candidate, role)
        self._register(plugin, f"{role}:{name}", self._label(role, candidate))
        self._loaded[(role, name)] = (plugin, candidate)
        return plugin, candidate

    def _register(self, plugin: object, name: str, label: str) -> None:
        if self._pm.is_registered(plugin):
            return  # one module serving two roles: its hooks are already known
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{label} has an invalid hook implementation: {exc}") from exc
        for caller in self._pm.get_hookcallers(plugin) or []:
            if caller.spec is None and any(
                impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()
            ):
                self._pm.unregister(plugin)
                raise PluginError(
                    f"{label} implements {caller.name}, which is not a shoal hook "
                    f"(known hooks: {', '.join(sorted(_hook_names()))})"
                )

    @staticmethod
    def _label(role: str, candidate: _Candidate) -> str:
        return f'{role} plugin "{candidate.name}" (distribution {candidate.dist_label})'

    @staticmethod
    def _ext_label(candidate: _Candidate) -> str:
        return f'extension plugin "{candidate.name}" (distribution {candidate.dist_label})'


def _select(role: str, name: str, candidates: Sequence[_Candidate]) -> _Candidate:
    same = [c for c in candidates if c.name == name]
    if not same:
        installed = ", ".join(sorted({c.name for c in candidates})) or "none"
        raise PluginError(
            f'unknown {role} plugin "{name}"; installed {role} plugins: {installed} '
            f"(choose one with --plugin {role}=NAME)"
        )
    if len(same) > 1:
        raise _duplicate_error(role, name, same)
    return same[0]


def _group_by_name(candidates: Iterable[_Candidate]) -> dict[str, list[_Candidate]]:
    by_name: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        by_name.setdefault(candidate.name, []).append(candidate)
    return by_name


def _call_factory(
    pm: pluggy.PluginManager, plugin: object, role: str, candidate: _Candidate, context: PluginContext
) -> Any:
    """Call ``plugin``'s (and only its) factory hook for ``role`` and check what it returns."""
    label = PluginLoader._label(role, candidate)
    hook_name = factory_hook_name(role)
    caller = getattr(pm.hook, hook_name)
    if not any(impl.plugin is plugin for impl in caller.get_hookimpls()):
        raise PluginError(f"{label} does not implement the hook {hook_name}")
    others = [p for p in pm.get_plugins() if p is not plugin]
    only_this = pm.subset_hook_caller(hook_name, remove_plugins=others)
    context.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = only_this(context=context)
    except Exception as exc:
        raise PluginError(f"{label} failed to build its provider in {hook_name}: {_describe(exc)}") from exc
    _check_provider(role, label, candidate, hook_name, result)
    return result


def _check_provider(role: str, label: str, candidate: _Candidate, hook_name: str, result: object) -> None:
    if result is None:
        raise PluginError(f"{label} returned None from {hook_name}; it must return a {role} provider")
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose; avoid the "never awaited" warning
        raise PluginError(f"{label} returned an awaitable from {hook_name}; factory hooks must not be async")
    problem = _declaration_problem(role, candidate, type(result))
    if problem is not None:
        raise PluginError(f"{problem.full} (built by {hook_name})")


class _Problem(NamedTuple):
    """A declaration fault: ``full`` for ``PluginError``, ``short`` for a ``plugin ls`` row."""

    full: str
    short: str


def _declaration_problem(role: str, candidate: _Candidate, cls: type) -> _Problem | None:
    """What is wrong with a provider class's ``role``/``api_version``/methods, if anything."""
    label = f'{role} plugin "{candidate.name}" (distribution {candidate.dist_label})'
    declared_role = getattr(cls, "role", None)
    version = getattr(cls, "api_version", None)
    if not isinstance(declared_role, str) or not isinstance(version, int) or isinstance(version, bool):
        what = "does not declare role (str) and api_version (int) class attributes"
        return _Problem(f"{label} provides a {cls.__qualname__} that {what}", f"{cls.__qualname__} {what}")
    if declared_role != role:
        short = f'provider declares role "{declared_role}", not "{role}"'
        return _Problem(
            f'plugin "{candidate.name}" (distribution {candidate.dist_label}) in group '
            f'{ROLE_GROUPS[role]} returned a provider for role "{declared_role}", not "{role}"',
            short,
        )
    if version != API_VERSIONS[role]:
        short = f"implements {role} API version {version}, but this shoal speaks version {API_VERSIONS[role]}"
        return _Problem(f"{label} {short}", short)
    missing = [m for m in _protocol_methods(_PROTOCOLS[role]) if not callable(getattr(cls, m, None))]
    if missing:
        what = f"lacks {role} API methods: {', '.join(missing)}"
        return _Problem(f"{label} provides a {cls.__qualname__} that {what}", f"{cls.__qualname__} {what}")
    declaration_checks = {"ca": external_ca_protocols, "runtime": declared_engine_concurrency}
    if role in declaration_checks:
        try:
            declaration_checks[role](cls)
        except TypeError as exc:
            what = f"has a malformed declaration: {exc}"
            return _Problem(
                f"{label} provides a {cls.__qualname__} that {what}", f"{cls.__qualname__} {what}"
            )
    return None


def _protocol_methods(protocol: type) -> list[str]:
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass.__module__ in ("typing", "builtins") or klass is object:
            continue
        for attr, value in vars(klass).items():
            if not attr.startswith("_") and inspect.isfunction(value) and attr not in names:
                names.append(attr)
    return names


def _hook_names() -> list[str]:
    return [n for n in dir(shoal.hookspecs) if n.startswith("shoal_")]


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class PluginRecord:
    """One row of ``shoal plugin ls``.

    ``role`` is a role name, or ``"extension"`` for ``shoal.extensions`` plugins (always
    active, no API version). ``api_version`` is read from the module's ``PROVIDER_CLASS``;
    ``None`` when unknown. ``error`` is empty when the plugin imported and declares itself
    correctly, else why not (a selected plugin that is not installed gets ``"not installed"``).
    """

    role: str
    name: str
    distribution: str
    version: str
    api_version: int | None
    selected: bool
    error: str = ""


def list_installed(
    selection: Mapping[str, str] | None = None, options: Mapping[str, Mapping[str, str]] | None = None
) -> list[PluginRecord]:
    """Every installed plugin, in ``ROLES`` order, each imported and checked as a daemon would.

    Unlike the loader this imports every plugin, to read ``PROVIDER_CLASS``, and builds each
    role plugin whose declaration is sound once in a throwaway directory (``_build_problem``)
    with ``options`` (``--plugin-opt``, per role); what goes wrong is reported in that plugin's
    row, never raised.
    """
    chosen = dict(DEFAULT_SELECTION)
    for role, name in (selection or {}).items():
        _check_role(role, "the plugin selection")
        chosen[role] = name
    installed = importlib.metadata.entry_points()
    records: list[PluginRecord] = []
    for role in ROLES:
        candidates = _discover(ROLE_GROUPS[role], installed)
        by_name = _group_by_name(candidates)
        for name in sorted(by_name):
            same = by_name[name]
            for candidate in same:
                dup = _duplicate_reason(candidate, same) if len(same) > 1 else ""
                version, error = _inspect_role_plugin(role, candidate, (options or {}).get(role, {}))
                records.append(
                    PluginRecord(
                        role=role,
                        name=name,
                        distribution=candidate.distribution,
                        version=candidate.version,
                        api_version=version,
                        selected=chosen[role] == name,
                        error=dup or error,
                    )
                )
        if chosen[role] not in by_name:
            records.append(PluginRecord(role, chosen[role], "", "", None, True, "not installed"))
    ext_by_name = _group_by_name(_discover(EXTENSIONS_GROUP, installed))
    for name in sorted(ext_by_name):
        same = ext_by_name[name]
        for candidate in same:
            dup = _duplicate_reason(candidate, same) if len(same) > 1 else ""
            error = ""
            try:
                _import(candidate, "extension")
            except PluginError as exc:
                error = _import_reason(exc)
            records.append(
                PluginRecord(
                    "extension", name, candidate.distribution, candidate.version, None, True, dup or error
                )
            )
    return records


def _inspect_role_plugin(
    role: str, candidate: _Candidate, options: Mapping[str, str]
) -> tuple[int | None, str]:
    """(declared API version, short error) of one installed role plugin, importing it."""
    try:
        plugin = _import(candidate, role)
    except PluginError as exc:
        return None, _import_reason(exc)
    cls = getattr(plugin, PROVIDER_CLASS_ATTR, None)
    if not isinstance(cls, type):
        return None, _NO_PROVIDER_CLASS
    version = getattr(cls, "api_version", None)
    known = version if isinstance(version, int) and not isinstance(version, bool) else None
    problem = _declaration_problem(role, candidate, cls)
    if problem is not None:
        return known, problem.short
    return known, _build_problem(role, candidate, plugin, options)


_NO_PROVIDER_CLASS: Final = f"module defines no {PROVIDER_CLASS_ATTR} (its provider class)"


def _build_problem(role: str, candidate: _Candidate, plugin: object, options: Mapping[str, str]) -> str:
    """Why ``plugin`` cannot build its provider, as a daemon would build it ("" when it can).

    The listing builds every provider once, in a throwaway directory with the role's
    ``--plugin-opt`` options given to ``plugin ls``, and drops it: a factory that raises, a missing factory hook or a provider whose API version
    differs from its ``PROVIDER_CLASS`` then shows as broken here instead of only when a
    manager starts or becomes leader.
    """
    pm = pluggy.PluginManager(shoal.hookspecs.PROJECT)
    pm.add_hookspecs(shoal.hookspecs)
    label = PluginLoader._label(role, candidate)
    try:
        pm.register(plugin)
        with tempfile.TemporaryDirectory(prefix=f"shoal-ls-{role}-") as scratch:
            context = PluginContext(
                role=role, name=candidate.name, state_dir=Path(scratch), options=dict(options)
            )
            _call_factory(pm, plugin, role, candidate, context)
    except pluggy.PluginValidationError as exc:
        return f"has an invalid hook implementation: {_one_line(str(exc))}"
    except PluginError as exc:
        return str(exc).removeprefix(label).strip()
    return ""


@dataclass(frozen=True)
class DeclaredPlugin:
    """One installed plugin of a role and the provider class it declares (nothing built).

    ``provider_class`` is ``None`` when the plugin cannot be used; ``error`` then says why
    (import failure, no ``PROVIDER_CLASS``, a faulty declaration, a duplicate name).
    """

    name: str
    label: str
    provider_class: type | None
    error: str = ""


def declared_plugins(role: str) -> list[DeclaredPlugin]:
    """Every installed plugin of ``role`` with its ``PROVIDER_CLASS``, sorted by name.

    Imports each plugin module (registering none with a plugin manager and building no
    provider): this is how a plugin is chosen by what it declares, e.g. the CA plugin serving
    an ``--external-ca`` protocol, without the kernel knowing any plugin's name.
    """
    _check_role(role, "declared_plugins")
    found: list[DeclaredPlugin] = []
    for name, same in sorted(_group_by_name(_discover(ROLE_GROUPS[role])).items()):
        candidate = same[0]
        label = PluginLoader._label(role, candidate)
        if len(same) > 1:
            found.append(DeclaredPlugin(name, label, None, _duplicate_error(role, name, same).args[0]))
            continue
        try:
            plugin = _import(candidate, role)
        except PluginError as exc:
            found.append(DeclaredPlugin(name, label, None, _import_reason(exc)))
            continue
        cls = getattr(plugin, PROVIDER_CLASS_ATTR, None)
        if not isinstance(cls, type):
            found.append(DeclaredPlugin(name, label, None, _NO_PROVIDER_CLASS))
            continue
        problem = _declaration_problem(role, candidate, cls)
        if problem is not None:
            found.append(DeclaredPlugin(name, label, None, problem.short))
            continue
        found.append(DeclaredPlugin(name, label, cls))
    return found


def _import_reason(exc: PluginError) -> str:
    cause = exc.__cause__
    return f"failed to import: {_describe(cause)}" if cause is not None else str(exc)


def _duplicate_reason(candidate: _Candidate, same: Sequence[_Candidate]) -> str:
    others = ", ".join(c.dist_label for c in same if c is not candidate)
    return f"name also registered by {others}; uninstall one of them"


# --------------------------------------------------------------------------- text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
