"""shoal runtime plugin for Podman: runs a node's tasks as containers on podman's REST service."""

from shoal_runtime_podman.runtime import PodmanRuntime

__all__ = ["PodmanRuntime"]
