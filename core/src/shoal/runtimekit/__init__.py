"""Helpers for runtime plugins, shared by the docker and podman runtimes and free for any other.

- ``shoal.runtimekit.task``: from a task to an engine's container settings (names, labels,
  command, env, mounts, healthcheck, limits) and the error texts Swarm users know.
- ``shoal.runtimekit.logs``: parsing the engines' multiplexed log streams into ``LogLine``.
- ``shoal.runtimekit.bridge``: running blocking SDK calls in their own threads, so that long
  waits never starve asyncio's small default executor and a cancelled call frees its thread.

These are conveniences, not part of the role contract: a runtime may ignore them.
"""
