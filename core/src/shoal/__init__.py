"""shoal: Docker Swarm mode rebuilt in Python as a plugin microkernel.

The kernel (this package) holds the object model, the hook specs, the plugin loader, the
manager components, the agent, the daemon and the CLI. Every role implementation lives in a
plugin distribution; see ``shoal.roles`` for the provider protocols.
"""

from __future__ import annotations

#: Not ``typing.TYPE_CHECKING``: every ``shoal`` command imports this package, and a detached
#: ``service create`` runs without importing ``typing`` at all (issue 18 item 4).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from shoal.hookspecs import hookimpl as hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    """``shoal.hookimpl`` is imported on first use: the CLI starts without pluggy."""
    if name == "hookimpl":
        from shoal.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")
