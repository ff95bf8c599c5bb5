"""Entry point module (``shoal.network`` group, name ``fake``): builds the provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_network_fake.provider import FakeNetwork

#: Read by ``shoal plugin ls`` and the control API (its ``features``) without building it.
PROVIDER_CLASS = FakeNetwork


@hookimpl
def shoal_network_provider(context: PluginContext) -> FakeNetwork:
    """No options."""
    if context.options:
        raise ValueError(f"network fake takes no options, got network.{sorted(context.options)[0]}")
    return FakeNetwork()
