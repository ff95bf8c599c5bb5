"""Entry point module (``shoal.runtime`` group, name ``docker``): builds the provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from .runtime import DockerRuntime

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = DockerRuntime


@hookimpl
def shoal_runtime_provider(context: PluginContext) -> DockerRuntime:
    """Endpoint: ``--plugin-opt runtime.host=URL``, else ``DOCKER_HOST``, else the local socket."""
    return DockerRuntime.from_context(context)
