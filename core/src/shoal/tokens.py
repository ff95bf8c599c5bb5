"""Join tokens in Swarm's format: ``SWMTKN-1-<root digest>-<secret>``.

The digest part is the SHA-256 of the root CA certificate (PEM), in base36, 50 characters: a
joining node checks the root a manager shows it against this digest before trusting anything,
so a man in the middle cannot enrol it. The secret part is 16 random bytes in base36, 25
characters: it decides whether the node joins as a worker or a manager, and is compared in
constant time. Rotating a token replaces the secret; the digest only changes with the root.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from shoal.ids import base36

PREFIX = "SWMTKN"
VERSION = "1"
DIGEST_LENGTH = 50
SECRET_LENGTH = 25
_TOKEN = re.compile(rf"^{PREFIX}-{VERSION}-([0-9a-z]{{{DIGEST_LENGTH}}})-([0-9a-z]{{{SECRET_LENGTH}}})$")


class TokenError(ValueError):
    """A token is malformed, or does not fit this swarm. The message is shown as is."""


@dataclass(frozen=True)
class JoinToken:
    digest: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}-{VERSION}-{self.digest}-{self.secret}"


def root_digest(root_pem: bytes) -> str:
    """The token's digest part for a root CA certificate."""
    return base36(int.from_bytes(hashlib.sha256(root_pem).digest(), "big"), DIGEST_LENGTH)


def new_token(root_pem: bytes) -> str:
    """A fresh token for the swarm whose root is ``root_pem``."""
    secret = base36(int.from_bytes(secrets.token_bytes(16), "big"), SECRET_LENGTH)
    return str(JoinToken(root_digest(root_pem), secret))


def parse(token: str) -> JoinToken:
    """Split a token; a one-line error says what is wrong with a malformed one."""
    match = _TOKEN.match(token.strip())
    if match is None:
        if not token.startswith(f"{PREFIX}-"):
            raise TokenError(f'invalid join token: it must start with "{PREFIX}-{VERSION}-"')
        raise TokenError(
            f"invalid join token: expected {PREFIX}-{VERSION}-<{DIGEST_LENGTH} base36 characters>-"
            f"<{SECRET_LENGTH} base36 characters>; copy it again from `shoal swarm join-token`"
        )
    return JoinToken(match.group(1), match.group(2))


def matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of two whole tokens."""
    return hmac.compare_digest(presented.encode(), expected.encode())
