"""What the store keeps for an aws secret: the AWS name of its value, authenticated.

Form: ``b"aws1 <aws-name> <parts> <hmac-sha256 hex>"``. The MAC (keyed by the swarm's material
for this driver, which the kernel keeps in the cluster object) covers the shoal secret's ID, the
AWS name and the number of parts, so a store writer cannot point one secret at another secret's
value, nor at an AWS secret this swarm did not create: the leader refuses the reference instead.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

FORMAT = "aws1"
MATERIAL_BYTES = 32


class BadReference(ValueError):
    """The stored form is not an aws reference made for this secret under this material."""


@dataclass(frozen=True)
class Reference:
    aws_name: str
    parts: int

    def encode(self, material: bytes, secret_id: str) -> bytes:
        return f"{FORMAT} {self.aws_name} {self.parts} {_mac(material, secret_id, self)}".encode()

    @classmethod
    def decode(cls, material: bytes, secret_id: str, stored: bytes) -> Reference:
        try:
            fmt, aws_name, parts, mac = stored.decode("ascii").split(" ")
            reference = cls(aws_name, int(parts))
        except (UnicodeDecodeError, ValueError):
            raise BadReference("the stored value is not an aws reference") from None
        if fmt != FORMAT or reference.parts < 1:
            raise BadReference("the stored value is not an aws reference")
        if not hmac.compare_digest(mac, _mac(material, secret_id, reference)):
            raise BadReference("the reference does not verify (altered, or made for another secret or swarm)")
        return reference


def swarm_tag(material: bytes) -> str:
    """A short per-swarm name component, so two swarms sharing an account do not collide."""
    return hmac.new(material, b"swarm-tag", hashlib.sha256).hexdigest()[:12]


def _mac(material: bytes, secret_id: str, reference: Reference) -> str:
    if len(material) != MATERIAL_BYTES:
        raise BadReference(f"the swarm's aws material has {len(material)} bytes, not {MATERIAL_BYTES}")
    message = f"{secret_id}\0{reference.aws_name}\0{reference.parts}".encode()
    return hmac.new(material, message, hashlib.sha256).hexdigest()
