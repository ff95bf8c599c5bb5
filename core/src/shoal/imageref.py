"""Image references checked with docker's grammar (distribution's ``reference`` package).

Swarm's control API refuses a service whose image is not a valid reference
(``ParseNormalizedNamed``), so a typo such as ``SEARCHSVC:V1.0`` fails at ``service create``
instead of leaving a service whose every task fails to pull. The grammar, in short::

    reference  := name [":" tag] ["@" digest]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]          (the first component, if it has "." or ":" or is
                                            "localhost", or has an upper-case letter)
    path-component := [a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}

The name is at most 255 characters, and a bare 64-hex-digit name is refused (it would read as
an image ID).
"""

from __future__ import annotations

import re

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_HEX64 = re.compile(r"[a-f0-9]{64}\Z")
NAME_MAX = 255


def reference_problem(image: str) -> str | None:
    """Why ``image`` is not a valid reference (a short phrase), or ``None`` if it is one."""
    if not image:
        return "it is empty"
    rest, at, digest = image.partition("@")
    if at and not _DIGEST.match(digest):
        return f'"{digest}" is not a valid digest (use ALGORITHM:HEX, e.g. sha256:...)'
    name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            return f'"{tag}" is not a valid tag (letters, digits, "_", "." and "-", up to 128)'
    if not name:
        return "the repository name is empty"
    if len(name) > NAME_MAX:
        return f"the repository name is longer than {NAME_MAX} characters"
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    ):
        if not _DOMAIN.match(first):
            return f'"{first}" is not a valid registry host'
        components = components[1:]
    elif _HEX64.match(name):
        return "a 64-character hexadecimal string is an image ID, not a repository name"
    for component in components:
        if not _PATH_COMPONENT.match(component):
            if component.lower() != component and _PATH_COMPONENT.match(component.lower()):
                return "the repository name must be lowercase"
            return (
                f'"{component}" is not a valid repository name component '
                '(lowercase letters and digits, separated by ".", "_", "__" or "-")'
            )
    return None
