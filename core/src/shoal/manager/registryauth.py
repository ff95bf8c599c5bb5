"""``service create/update --with-registry-auth`` on the managers.

Swarm keeps the client's registry credentials in the task spec (``PullOptions.RegistryAuth``),
so every task, every agent's task store and ``inspect`` carry them. Here they are treated like a
secret's value instead: sealed by the swarm's secrets plugin (``Service.registry_auth``, off the
spec, so tasks never carry them), opened by the leader only when it sends a task of the service
to a node (``deliveries.py``), and shown by the API only as set or not.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shoal.ids import new_id
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError

if TYPE_CHECKING:  # secrets.py imports the control API, which imports this module
    from shoal.manager.secrets import SecretsControl

#: docker's AuthConfig fields a client may send (``auth`` is decoded by the client).
FIELDS = ("username", "password", "serveraddress", "identitytoken")
#: A bound on the credentials' size (tokens can be long, not this long).
MAX_BYTES = 16 * 1024


def requested(params: dict[str, Any]) -> bytes | None:
    """The call's ``registry_auth`` as canonical AuthConfig JSON, or None when not given.

    Raises ``SpecError`` (one line) for anything else than an object of string fields, with a
    user name and password or an identity token.
    """
    given = params.get("registry_auth")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise SpecError("registry_auth must be an object with username, password, serveraddress")
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise SpecError(f"registry_auth: unknown field {unknown[0]!r} (expected {', '.join(FIELDS)})")
    if not all(isinstance(value, str) for value in given.values()):
        raise SpecError("registry_auth: every field must be a string")
    if not (given.get("username") and given.get("password")) and not given.get("identitytoken"):
        raise SpecError("registry_auth needs a username and password, or an identity token")
    data = json.dumps({key: given[key] for key in FIELDS if given.get(key)}, sort_keys=True).encode()
    if len(data) > MAX_BYTES:
        raise SpecError(f"registry_auth is larger than {MAX_BYTES // 1024} KiB")
    return data


async def seal(secrets: SecretsControl, service_name: str, credentials: bytes) -> pb.Secret:
    """``credentials`` in the at-rest form of the swarm's secrets plugin, as ``Service.registry_auth``.

    The seal is bound to a fresh ID (the plugin refuses to open it as anything else); the leader
    opens it with ``SecretsControl.value_for`` like any secret.
    """
    driver = secrets.default_driver()
    provider = secrets.provider(driver)
    if not provider.takes_value:
        raise SpecError(
            f"--with-registry-auth needs a secrets plugin that keeps values; the swarm's ({driver}) does not"
        )
    seal_id = f"registry-auth-{new_id()}"
    material = await secrets.material(driver)
    sealed = await provider.store(material, seal_id, service_name, credentials)
    name = f"registry credentials of service {service_name}"
    return pb.Secret(
        id=seal_id, spec=pb.SecretSpec(annotations=pb.Annotations(name=name), driver=driver, data=sealed)
    )


def shown(service: pb.Service, as_dict: dict[str, Any]) -> dict[str, Any]:
    """``as_dict`` (the service as the API shows it) without the sealed credentials: only
    ``WithRegistryAuth: true`` says they are set."""
    if service.HasField("registry_auth"):
        as_dict.pop("registry_auth", None)
        as_dict["WithRegistryAuth"] = True
    return as_dict
