"""The aws secrets provider: values in AWS Secrets Manager, a signed reference in the store.

``secret create --driver aws NAME FILE`` creates the AWS secret
``<name-prefix>/<swarm tag>/<shoal secret ID>`` (tagged with the shoal name and ID) holding the
value as binary, and the store keeps only a reference (see ``reference.py``). Secrets Manager
holds at most 64 KiB per secret, shoal allows just under 500 KiB: a larger value is split into
parts ``.../part1``, ``.../part2``... The leader calls ``fetch`` when it builds an assignment
that needs the value; boto3 is synchronous, so each call runs in a worker thread, bounded by
the client's timeouts and by ``asyncio.wait_for`` on top.

``secret rm`` does not delete the AWS secret (the kernel has no such hook): the platform team
removes it, found by its tags.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from shoal.plugin import SecretFetchError, SecretUse

from shoal_secrets_aws.reference import MATERIAL_BYTES, BadReference, Reference, swarm_tag
from shoal_secrets_aws.settings import AwsOptionError, AwsSettings

#: Secrets Manager's limit for one secret's value.
PART_BYTES = 65536


class AwsSecrets:
    """Stores values in AWS Secrets Manager; the leader fetches them for assignments."""

    role: ClassVar[str] = "secrets"
    api_version: ClassVar[int] = 2
    takes_value: ClassVar[bool] = True

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._client: Any = None

    async def new_material(self) -> bytes:
        return os.urandom(MATERIAL_BYTES)

    async def store(self, material: bytes, secret_id: str, name: str, value: bytes) -> bytes:
        base = f"{self.settings.name_prefix}/{swarm_tag(material)}/{secret_id}"
        chunks = [value[i : i + PART_BYTES] for i in range(0, len(value), PART_BYTES)] or [b""]
        created: list[str] = []
        try:
            for index, chunk in enumerate(chunks):
                aws_name = _part_name(base, index)
                await self._call(
                    "create_secret",
                    Name=aws_name,
                    SecretBinary=chunk,
                    Description=f"shoal secret {name} ({secret_id})",
                    Tags=[
                        {"Key": "shoal-secret-id", "Value": secret_id},
                        {"Key": "shoal-secret-name", "Value": name},
                    ],
                )
                created.append(aws_name)
        except SecretFetchError as exc:
            await self._forget(created)
            raise SecretFetchError(f"{self.settings.where}: cannot store {name}: {exc}") from None
        return Reference(base, len(chunks)).encode(material, secret_id)

    async def fetch(self, material: bytes, stored: bytes, use: SecretUse) -> bytes:
        label = use.secret_name or use.secret_id
        try:
            reference = Reference.decode(material, use.secret_id, stored)
        except BadReference as exc:
            raise SecretFetchError(f"{self.settings.where}: secret {label}: {exc}") from None
        value = b""
        for index in range(reference.parts):
            aws_name = _part_name(reference.aws_name, index)
            try:
                answer = await self._call("get_secret_value", SecretId=aws_name)
            except SecretFetchError as exc:
                raise SecretFetchError(f"{self.settings.where}: secret {label} ({aws_name}): {exc}") from None
            value += bytes(answer.get("SecretBinary", b""))
        return value

    async def _call(self, operation: str, **params: Any) -> Any:
        """One API call in a thread, with a bounded wait; failures become one short line."""
        try:
            if self._client is None:
                self._client = self.settings.client()
        except AwsOptionError as exc:
            raise SecretFetchError(str(exc)) from None
        method = getattr(self._client, operation)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the answer when the
            # call ends as the caller is cancelled, and the cancelled caller would go on calling.
            async with asyncio.timeout(self.settings.timeout * 3 + 1):
                return await asyncio.to_thread(method, **params)
        except TimeoutError:
            raise SecretFetchError(f"no answer within {self.settings.timeout * 3 + 1:g}s") from None
        except NoCredentialsError:
            raise SecretFetchError(
                "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the daemon's "
                "environment, or --plugin-opt secrets.aws.profile=NAME)"
            ) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "error"), error.get("Message", "")
            if code == "ResourceNotFoundException":
                raise SecretFetchError("not found in AWS Secrets Manager") from None
            raise SecretFetchError(_one_line(f"{code}: {message}")) from None
        except BotoCoreError as exc:
            raise SecretFetchError(_one_line(f"cannot reach it: {exc}")) from None

    async def _forget(self, names: list[str]) -> None:
        """Best effort: remove the parts of a value whose store failed half-way."""
        for aws_name in names:
            try:
                await self._call("delete_secret", SecretId=aws_name, ForceDeleteWithoutRecovery=True)
            except SecretFetchError:
                pass


def _part_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base}/part{index}"


def _one_line(text: str) -> str:
    """botocore's messages quote URLs; ``service ps`` quotes the whole error: keep one level."""
    return " ".join(text.replace('"', "'").split())[:300]
