"""``--secret`` and ``--config`` of ``service create/update``: references into the store.

A service names secrets and configs by name or ID; the control API resolves each to the
object's ID (the name is kept for display) with the file it appears as in the container:
``/run/secrets/<target>`` for a secret (a plain file name), an absolute path for a config
(``/<name>`` by default). Anything unknown or malformed is one ``SpecError`` line and nothing
is stored. Adding or removing a reference is a spec change, so ``--secret-add/--secret-rm``
roll the service's tasks like any other update.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from shoal.manager.objectrefs import matching
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError, strings

#: docker's rule for secret and config names (and Swarm's limit of 64 characters).
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")
NAME_MAX = 64
DEFAULT_MODE = 0o444
UID_MAX = 2**32 - 1

Ref = TypeVar("Ref", pb.SecretReference, pb.ConfigReference)
Obj = pb.Secret | pb.Config


def check_name(name: Any, what: str) -> str:
    """A secret or config name as docker accepts it, or one line saying why not."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"a {what} name is required")
    if len(name) > NAME_MAX or not NAME_PATTERN.match(name):
        raise SpecError(
            f'invalid {what} name "{name}": use at most {NAME_MAX} characters of letters, digits, '
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return name


def find(objects: Iterable[Obj], ref: str, what: str) -> Obj | None:
    """By ID, then name, then unique ID prefix; None when nothing matches."""
    matches = matching(objects, ref)
    if len(matches) > 1:
        raise SpecError(f"{what} {ref} is ambiguous ({len(matches)} matches)")
    return matches[0] if matches else None


def _parse(text: str, flag: str, what: str) -> dict[str, str]:
    """``NAME`` or ``source=NAME,target=T,uid=U,gid=G,mode=0400`` (docker's keys)."""
    if "=" not in text:
        return {"source": text}
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = {"src": "source", "tgt": "target"}.get(key.strip().lower(), key.strip().lower())
        if not sep or key not in ("source", "target", "uid", "gid", "mode"):
            raise SpecError(
                f'invalid {flag} "{text}": use NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0444]'
            )
        fields[key] = value.strip()
    if not fields.get("source"):
        raise SpecError(f'invalid {flag} "{text}": source (the {what} name) is required')
    return fields


def _number(fields: dict[str, str], key: str, text: str, flag: str, *, base: int, limit: int) -> int:
    raw = fields.get(key, "")
    if not raw:
        return DEFAULT_MODE if key == "mode" else 0
    try:
        value = int(raw, base)
    except ValueError:
        value = -1
    if not 0 <= value <= limit or len(raw) > 12:
        kind = "an octal mode such as 0400" if key == "mode" else f"a number from 0 to {limit}"
        raise SpecError(f'invalid {flag} "{text}": {key} must be {kind}')
    return value


def _target(fields: dict[str, str], name: str, text: str, flag: str, *, secret: bool) -> str:
    target = fields.get("target") or (name if secret else "/" + name)
    if secret:
        if "/" in target or target in (".", ".."):
            raise SpecError(
                f'invalid {flag} "{text}": target must be a file name (it appears at /run/secrets/<target>)'
            )
    elif not target.startswith("/") or target == "/" or "\x00" in target:
        raise SpecError(f'invalid {flag} "{text}": target must be an absolute file path in the container')
    return target


def _reference(
    text: str, flag: str, objects: Iterable[Obj], *, secret: bool, make: Callable[..., Ref]
) -> Ref:
    what = "secret" if secret else "config"
    fields = _parse(text, flag, what)
    found = find(objects, fields["source"], what)
    if found is None:
        raise SpecError(f"{what} not found: {fields['source']} (create it first with `shoal {what} create`)")
    name = found.spec.annotations.name
    file = pb.FileTarget(
        name=_target(fields, name, text, flag, secret=secret),
        uid=_number(fields, "uid", text, flag, base=10, limit=UID_MAX),
        gid=_number(fields, "gid", text, flag, base=10, limit=UID_MAX),
        mode=_number(fields, "mode", text, flag, base=8, limit=0o777),
    )
    return make(found.id, name, file)


def _secret(obj_id: str, name: str, file: pb.FileTarget) -> pb.SecretReference:
    return pb.SecretReference(secret_id=obj_id, secret_name=name, file=file)


def _config(obj_id: str, name: str, file: pb.FileTarget) -> pb.ConfigReference:
    return pb.ConfigReference(config_id=obj_id, config_name=name, file=file)


def _no_duplicate_targets(refs: list[Any], flag: str) -> None:
    seen: set[str] = set()
    for ref in refs:
        if ref.file.name in seen:
            raise SpecError(f"invalid {flag}: two references use the target {ref.file.name}")
        seen.add(ref.file.name)


def apply_create(view: Any, spec: pb.ServiceSpec, params: Mapping[str, Any]) -> None:
    """``service create --secret/--config``: fill the container spec's references."""
    container = spec.task.container
    for key, flag, secret in (("secrets", "--secret", True), ("configs", "--config", False)):
        objects = list(view.secrets.all() if secret else view.configs.all())
        make: Any = _secret if secret else _config
        refs = [_reference(t, flag, objects, secret=secret, make=make) for t in strings(params, key, flag)]
        _no_duplicate_targets(refs, flag)
        target = container.secrets if secret else container.configs
        del target[:]
        target.extend(refs)


def apply_update(view: Any, spec: pb.ServiceSpec, params: Mapping[str, Any]) -> None:
    """``service update --secret-add/--secret-rm`` (and configs): remove by name or ID, then
    add (an added reference replaces one with the same target)."""
    container = spec.task.container
    for kind, secret in (("secret", True), ("config", False)):
        objects = list(view.secrets.all() if secret else view.configs.all())
        current: list[Any] = list(container.secrets if secret else container.configs)
        for ref_text in strings(params, f"{kind}_rm", f"--{kind}-rm"):
            found = find(objects, ref_text, kind)
            ids = {found.id} if found is not None else set()
            kept = [
                r
                for r in current
                if _ref_id(r) not in ids and _ref_name(r) != ref_text and _ref_id(r) != ref_text
            ]
            if len(kept) == len(current):
                raise SpecError(f"invalid --{kind}-rm: the service does not use {kind} {ref_text}")
            current = kept
        make: Any = _secret if secret else _config
        for text in strings(params, f"{kind}_add", f"--{kind}-add"):
            ref = _reference(text, f"--{kind}-add", objects, secret=secret, make=make)
            current = [r for r in current if r.file.name != ref.file.name] + [ref]
        _no_duplicate_targets(current, f"--{kind}-add")
        target = container.secrets if secret else container.configs
        del target[:]
        target.extend(current)


def _ref_id(ref: pb.SecretReference | pb.ConfigReference) -> str:
    return ref.secret_id if isinstance(ref, pb.SecretReference) else ref.config_id


def _ref_name(ref: pb.SecretReference | pb.ConfigReference) -> str:
    return ref.secret_name if isinstance(ref, pb.SecretReference) else ref.config_name


def services_using(view: Any, kind: str, object_id: str) -> list[str]:
    """Names of the services whose spec uses a secret (``kind="secret"``) or config."""
    names = []
    for service in view.services.all():
        container = service.spec.task.container
        refs = container.secrets if kind == "secret" else container.configs
        if any(_ref_id(r) == object_id for r in refs):
            names.append(service.spec.annotations.name)
    return sorted(names)
