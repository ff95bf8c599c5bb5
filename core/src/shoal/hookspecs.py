"""shoal's hook specifications.

A plugin is a module (or object) named by an entry point in one of the groups
``shoal.store``, ``shoal.scheduler``, ``shoal.ca``, ``shoal.runtime``, ``shoal.secrets``,
``shoal.transport``, ``shoal.network`` (one *role* each) or ``shoal.extensions``. Role plugins implement that
role's factory hook; only the plugin selected for a role is imported, and only its factory
hook is called. Extension plugins are all loaded and take part in the call-all hooks.

Implement a hook with ``shoal.hookimpl``::

    from shoal import hookimpl

    @hookimpl
    def shoal_scheduler_provider(context):
        return MyScheduler(context)

Every role plugin module must also define, at module level, ``PROVIDER_CLASS = <its provider
class>`` (the class object): ``shoal plugin ls`` reads ``role`` and ``api_version`` from it
before building a provider. The loader refuses a built provider whose ``role`` is not the
entry-point group's role, whose ``api_version`` is not ``shoal.roles.API_VERSIONS[role]``, or
which lacks a method of the role's protocol. Factory hooks are plain (not ``async``) functions.

A daemon builds every provider it will need once as a check before it starts anything (and
``shoal plugin ls`` builds each installed plugin), dropping the result: factories must build
without side effects (no connections, threads or files outside ``context.state_dir``).

Providers are then built for real (once per daemon; the scheduler once per leadership) and
called directly (their methods are ``async``); pluggy is not on the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from shoal.proto import objects_pb2 as pb
    from shoal.roles import (
        CAProvider,
        NetworkProvider,
        PluginContext,
        RuntimeProvider,
        SchedulerProvider,
        SecretsProvider,
        StoreProvider,
        TransportProvider,
    )

PROJECT = "shoal"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------- role factories
#
# Each is ``firstresult``: exactly one plugin (the selected one) is asked, and its return
# value is the provider. Return ``None`` only to decline; the loader then reports that the
# plugin did not provide the role.


@hookspec(firstresult=True)
def shoal_store_provider(context: PluginContext) -> StoreProvider | None:
    """Build the store provider: the replicated log under the object store.

    :param context: ``context.state_dir`` is where the provider keeps its WAL and snapshots.
    :returns: an object satisfying ``shoal.roles.StoreProvider`` with ``role = "store"``.

    Called once per manager daemon, before the store is opened. Stops at the first non-None
    result (only the selected plugin is asked).

    Example::

        @hookimpl
        def shoal_store_provider(context):
            return RaftStore(context.state_dir)
    """


@hookspec(firstresult=True)
def shoal_scheduler_provider(context: PluginContext) -> SchedulerProvider | None:
    """Build the scheduler provider that places pending tasks on nodes.

    :param context: options come from ``--plugin-opt scheduler.KEY=VALUE``.
    :returns: an object satisfying ``shoal.roles.SchedulerProvider`` with ``role = "scheduler"``.

    Called each time a manager becomes leader, and once as a check (the provider dropped) at
    ``swarm init``, a join as manager and every manager start, so a broken scheduler stops
    those with one line instead of leaving a leader that never schedules. Stops at the first
    non-None result.

    Example::

        @hookimpl
        def shoal_scheduler_provider(context):
            return BinpackScheduler()
    """


@hookspec(firstresult=True)
def shoal_ca_provider(context: PluginContext) -> CAProvider | None:
    """Build the CA provider that creates or adopts the root and signs node certificates.

    :param context: options come from ``--plugin-opt ca.KEY=VALUE``.
    :returns: an object satisfying ``shoal.roles.CAProvider`` with ``role = "ca"``.

    Called on managers at ``swarm init`` and at every start. Stops at the first non-None result.

    Example::

        @hookimpl
        def shoal_ca_provider(context):
            return InternalCA()
    """


@hookspec(firstresult=True)
def shoal_runtime_provider(context: PluginContext) -> RuntimeProvider | None:
    """Build the runtime provider that runs task containers on this node.

    :param context: options come from ``--plugin-opt runtime.KEY=VALUE`` (for example
        ``runtime.host=unix:///run/podman/podman.sock``).
    :returns: an object satisfying ``shoal.roles.RuntimeProvider`` with ``role = "runtime"``.

    Called once per daemon at start. Stops at the first non-None result.

    Example::

        @hookimpl
        def shoal_runtime_provider(context):
            return DockerRuntime(base_url=context.options.get("host"))
    """


@hookspec(firstresult=True)
def shoal_secrets_provider(context: PluginContext) -> SecretsProvider | None:
    """Build the secrets provider that keeps secret values at rest (``store``) and gives them
    back to the leader for a task's assignment (``fetch``).

    :returns: an object satisfying ``shoal.roles.SecretsProvider`` with ``role = "secrets"``.

    Called on managers: the cluster's secrets plugin, and the plugin a secret's ``--driver``
    names. Stops at the first non-None result. Example::

        @hookimpl
        def shoal_secrets_provider(context):
            return VaultSecrets(url=context.options["url"])
    """


@hookspec(firstresult=True)
def shoal_transport_provider(context: PluginContext) -> TransportProvider | None:
    """Build the transport provider that serves and calls node-to-node RPCs.

    :returns: an object satisfying ``shoal.roles.TransportProvider`` with ``role = "transport"``.

    Called once per daemon at start. Stops at the first non-None result.

    Example::

        @hookimpl
        def shoal_transport_provider(context):
            return GrpcTransport()
    """


@hookspec(firstresult=True)
def shoal_network_provider(context: PluginContext) -> NetworkProvider | None:
    """Build the network provider that realises the swarm's networks on this node.

    :param context: options come from ``--plugin-opt network.KEY=VALUE``.
    :returns: an object satisfying ``shoal.roles.NetworkProvider`` with ``role = "network"``.

    The plugin is chosen for the whole swarm at ``swarm init`` (``--plugin network=NAME``) and
    built on every node, once as a check at start. Stops at the first non-None result.

    Example::

        @hookimpl
        def shoal_network_provider(context):
            return OverlayNetwork(context.state_dir)
    """


# --------------------------------------------------------------------------- call-all hooks
#
# Implemented by plugins in the ``shoal.extensions`` group (and by role plugins, which may
# implement them too). Every implementation is called; results are collected in a list.


@hookspec
def shoal_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``shoal`` CLI.

    :param cli: the top-level click group; call ``cli.add_command(...)``.

    Called once when the CLI starts, for every extension plugin.

    Example::

        @hookimpl
        def shoal_cli_commands(cli):
            cli.add_command(my_command)
    """


@hookspec
def shoal_task_state_changed(task: pb.Task, old_state: int, new_state: int) -> None:
    """Observe a task's observed state moving forward on the leader.

    :param task: the task after the change (do not modify it).
    :param old_state: the previous ``TaskState`` number.
    :param new_state: the new ``TaskState`` number.

    Called for every observed-state change the store commits, on the leader only. Must not
    block: it runs on the event loop. Exceptions are logged and ignored.
    """


@hookspec
def shoal_node_filters() -> list[Any]:
    """Contribute extra node filters to the placement pipeline.

    :returns: a list of ``shoal.placement.Filter`` instances; every scheduler applies them
        after the built-in filters.

    Called once when the scheduler driver starts on the leader.
    """
    return []  # a spec only: pluggy never runs this body
