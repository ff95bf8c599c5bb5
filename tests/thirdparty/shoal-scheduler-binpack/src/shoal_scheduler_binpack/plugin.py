"""The module the ``binpack`` entry point names: shoal imports it and calls its hook."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_scheduler_binpack.scheduler import BinpackScheduler

#: `shoal plugin ls` reads the role and API version from this class without building it.
PROVIDER_CLASS = BinpackScheduler


@hookimpl
def shoal_scheduler_provider(context: PluginContext) -> BinpackScheduler:
    """Build the provider: checked at every manager start, then once per leadership."""
    return BinpackScheduler()
