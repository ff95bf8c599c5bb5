"""shoal runtime plugin for Docker: runs a node's tasks as containers on dockerd."""

from shoal_runtime_docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]
