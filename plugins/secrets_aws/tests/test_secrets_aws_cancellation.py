"""A cancelled caller of the AWS API stops there, whatever the loop turn (no AWS needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from shoal_secrets_aws import AwsSecrets, AwsSettings


class Answering:
    """A Secrets Manager client that answers at once."""

    def __init__(self) -> None:
        self.calls = 0

    def get_secret_value(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        return {"SecretBinary": b"v"}


@pytest.mark.parametrize("turns", range(8))
async def test_a_call_cancelled_as_its_answer_arrives_ends_cancelled(
    monkeypatch: pytest.MonkeyPatch, turns: int
) -> None:
    """A fetch is cancelled when its caller goes (a stopped task, a client gone). With
    ``asyncio.wait_for`` (Python 3.11) a cancellation arriving as the call's answer did was
    swallowed: the caller got the answer and went on (the next parts of a value, the next call)."""

    async def in_two_turns(method: Callable[..., Any], /, **params: Any) -> Any:
        # Stands in for the worker thread (whose finishing turn a test cannot choose).
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return method(**params)

    monkeypatch.setattr(asyncio, "to_thread", in_two_turns)
    provider = AwsSecrets(AwsSettings.from_options({"aws.region": "eu-west-1"}))
    provider._client = Answering()
    calling = asyncio.create_task(provider._call("get_secret_value", SecretId="x"))
    for _ in range(turns):
        await asyncio.sleep(0)
    if calling.done():
        return  # answered before the cancellation: nothing to lose
    calling.cancel()
    done, _ = await asyncio.wait({calling}, timeout=2)
    assert done
    assert calling.cancelled(), f"the call cancelled after {turns} loop turns returned {calling.result()}"
