"""The provider's background loops end when ``stop`` cancels them, whatever the loop turn
(no etcd needed: the client is a stand-in)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

try:
    import shoal_store_etcd  # noqa: F401
except ImportError:  # run from a checkout without installing the plugin
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shoal_store_etcd import etcdapi_pb2 as pb
from shoal_store_etcd.options import EtcdOptions
from shoal_store_etcd.provider import EtcdStore


class RenewingClient:
    """Answers every lease keep-alive after one loop turn, as a quick etcd would."""

    def keepalive(
        self, requests: AsyncIterator[pb.LeaseKeepAliveRequest]
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        async def replies() -> AsyncIterator[pb.LeaseKeepAliveResponse]:
            async for _ in requests:
                await asyncio.sleep(0)
                yield pb.LeaseKeepAliveResponse(TTL=60)

        return replies()

    def rotate(self) -> None:
        raise AssertionError("the keep-alive did not fail")


@pytest.mark.parametrize("turns", range(8))
async def test_stop_ends_the_keepalive_cancelled_as_a_renewal_completes(tmp_path: Path, turns: int) -> None:
    """``stop`` cancels the keep-alive and awaits it. With ``asyncio.wait_for`` (Python 3.11) a
    cancellation arriving as the renewal completed was swallowed: the loop went on to sleep a
    third of the lease TTL (20 s here) and held ``stop`` up that long."""
    store = EtcdStore(
        tmp_path, EtcdOptions(endpoints=("x:1",), credentials=None, lease_ttl=60), node_id="a", addr="a:1"
    )
    store._client = RenewingClient()  # type: ignore[assignment]
    keepalive = asyncio.create_task(store._keepalive())
    store._tasks = [keepalive]
    for _ in range(turns):
        await asyncio.sleep(0)
    stopping = asyncio.create_task(store.stop())
    done, _ = await asyncio.wait({stopping}, timeout=2)
    assert done, f"stop cancelled the keep-alive after {turns} loop turns and waited on"
    assert keepalive.cancelled()
