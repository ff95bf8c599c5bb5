"""Entry point ``spread`` in ``shoal.scheduler``: builds the spread scheduler provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_scheduler_spread.scheduler import SpreadScheduler

#: Read by ``shoal plugin ls`` (role and API version) without building a provider.
PROVIDER_CLASS = SpreadScheduler


@hookimpl
def shoal_scheduler_provider(context: PluginContext) -> SpreadScheduler:
    """The spread scheduler takes no options; extension filters come from ``shoal.placement``."""
    return SpreadScheduler()
