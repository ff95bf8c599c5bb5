"""Entry point module (``shoal.runtime`` group, name ``podman``): builds the provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from .runtime import PodmanRuntime

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = PodmanRuntime


@hookimpl
def shoal_runtime_provider(context: PluginContext) -> PodmanRuntime:
    """Endpoint: ``--plugin-opt runtime.host=URL``, else ``CONTAINER_HOST``, else the system socket."""
    return PodmanRuntime.from_context(context)
