"""shoal: Docker Swarm mode rebuilt in Python as a plugin microkernel.

The kernel (this package) holds the object model, the hook specs, the plugin loader, the
manager components, the agent, the daemon and the CLI. Every role implementation lives in a
plugin distribution; see ``shoal.roles`` for the provider protocols.
"""

__version__ = "0.1.0"

from shoal.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
