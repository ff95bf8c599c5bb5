"""Entry point module (``shoal.runtime`` group, name ``fake``): builds the provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = FakeRuntime


@hookimpl
def shoal_runtime_provider(context: PluginContext) -> FakeRuntime:
    """Options (``--plugin-opt runtime.KEY=VALUE``): see ``FakeOptions``; a bad one is a
    one-line ``ValueError``."""
    return FakeRuntime(FakeOptions.from_options(context.options))
