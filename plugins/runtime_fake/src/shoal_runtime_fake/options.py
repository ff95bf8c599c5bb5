"""The fake runtime's settings, from ``--plugin-opt runtime.KEY=VALUE`` (or built directly).

Every bad value is one ``ValueError`` line naming the option and what it takes, which the
loader shows the operator as is.
"""

from __future__ import annotations

import math
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

#: What ``describe`` reports when the options do not say (a small, realistic node).
DEFAULT_CPUS = 2
DEFAULT_MEMORY_BYTES = 4 * 1024**3
#: Pulls of these images fail (nothing listens on port 1): the conformance suite's "missing" image.
DEFAULT_UNPULLABLE = ("127.0.0.1:1/*",)


@dataclass(frozen=True)
class FakeOptions:
    """How a fake engine behaves. Times are seconds; 0 means "at once" or "never"."""

    #: Name of the in-process engine: providers with the same name share containers (like two
    #: daemons on one dockerd, or a daemon restarted in the same process). "" = a private one.
    engine: str = ""
    hostname: str = ""
    cpus: int = DEFAULT_CPUS
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    labels: dict[str, str] = field(default_factory=dict)
    #: How long ``prepare`` (image pull and create) and ``start`` take.
    prepare_delay: float = 0.0
    start_delay: float = 0.0
    #: Probability that a ``start`` fails (a permanent error: the task fails and is replaced).
    failure_rate: float = 0.0
    #: Every started container exits after this long with ``exit_code`` (0: runs on).
    exit_after: float = 0.0
    exit_code: int = 0
    #: Seed of the failure draws, so that a run can be replayed.
    seed: int = 0
    #: Images present before any pull (``pull_policy=never`` finds only these and pulled ones).
    images: tuple[str, ...] = ()
    #: Image patterns (``fnmatch``) whose pull fails with a permanent error.
    unpullable: tuple[str, ...] = DEFAULT_UNPULLABLE
    #: False: every call fails as a temporary "engine unreachable" error.
    reachable: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> FakeOptions:
        """Parse plugin options; ``ValueError`` (one line) for an unknown key or a bad value."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"runtime fake: unknown option runtime.{unknown[0]} (known: {', '.join(sorted(known))})"
            )
        values: dict[str, object] = {}
        for key, raw in options.items():
            values[key] = _parse(key, raw)
        result = cls(**values)  # type: ignore[arg-type]
        result.check()
        return result

    def check(self) -> None:
        """Refuse values no engine could have, naming the option."""
        if self.cpus < 1:
            raise ValueError(f"runtime fake: runtime.cpus must be at least 1, got {self.cpus}")
        if self.memory_bytes < 1:
            raise ValueError(f"runtime fake: runtime.memory_bytes must be positive, got {self.memory_bytes}")
        for name in ("prepare_delay", "start_delay", "exit_after"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"runtime fake: runtime.{name} must be seconds >= 0, got {value}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(
                f"runtime fake: runtime.failure_rate must be between 0 and 1, got {self.failure_rate}"
            )
        if not 0 <= self.exit_code <= 255:
            raise ValueError(f"runtime fake: runtime.exit_code must be 0-255, got {self.exit_code}")

    def host_name(self) -> str:
        return self.hostname or socket.gethostname()

    @staticmethod
    def machine() -> str:
        return platform.machine() or "x86_64"


_INTS = ("cpus", "memory_bytes", "exit_code", "seed")
_FLOATS = ("prepare_delay", "start_delay", "failure_rate", "exit_after")
_LISTS = ("images", "unpullable")


def _parse(key: str, raw: str) -> object:
    if key in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"runtime fake: runtime.{key} must be a whole number, got {raw!r}") from None
    if key in _FLOATS:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"runtime fake: runtime.{key} must be a number, got {raw!r}") from None
    if key in _LISTS:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if key == "labels":
        labels: dict[str, str] = {}
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            if not sep or not name:
                raise ValueError(f"runtime fake: runtime.labels takes KEY=VALUE,... got {part!r}")
            labels[name] = value
        return labels
    if key == "reachable":
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"runtime fake: runtime.reachable must be true or false, got {raw!r}")
        return lowered in ("true", "1", "yes")
    return raw
