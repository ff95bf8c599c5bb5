"""How a user's reference names a stored object: by ID, by name, or by a unique ID prefix.

Networks, secrets and configs are all named this way on the command line (docker's rule, in
that order: an exact ID wins over a name, a name over a prefix). One function does the
matching so the three cannot drift apart; what an ambiguous prefix means (a miss, or an
error line) stays with each caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class _Annotations(Protocol):
    @property
    def name(self) -> str: ...


class _Spec(Protocol):
    @property
    def annotations(self) -> _Annotations: ...


class NamedObject(Protocol):
    """A stored object with an ID and a name in its spec's annotations (``pb.Network``,
    ``pb.Secret``, ``pb.Config``...)."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> _Spec: ...


Named = TypeVar("Named", bound=NamedObject)


def matching(objects: Iterable[Named], ref: str) -> list[Named]:
    """What ``ref`` names: the object with that ID; else the (first) one with that name;
    else every object whose ID starts with ``ref`` (none for an empty ``ref``). More than one
    is an ambiguous prefix, for the caller to refuse."""
    candidates = list(objects)
    for obj in candidates:
        if obj.id == ref:
            return [obj]
    for obj in candidates:
        if obj.spec.annotations.name == ref:
            return [obj]
    return [obj for obj in candidates if ref and obj.id.startswith(ref)]
