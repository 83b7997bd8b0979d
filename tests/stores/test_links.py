"""Short links in Redis and in process: stored, resolved, counted, expired."""

from __future__ import annotations

import time
import uuid

import pytest

from ics_sms.stores.links import InMemoryLinkStore, LinkStoreError, RedisLinkStore, ShortLink

LINK = ShortLink(code="Ab3dEf9hIj", url="https://shop.example/x", message_id="m-1",
                 campaign_id="c", sender="s", metadata={"k": 1})


async def test_redis_store_resolves_and_counts_clicks(redis_url: str) -> None:
    store = RedisLinkStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:", ttl_s=60)
    async with store:
        await store.put_many([LINK])
        assert await store.click(LINK.code) == (LINK, 1)
        assert await store.click(LINK.code) == (LINK, 2)
        assert await store.click("unknown") is None


async def test_redis_store_unreachable_is_a_link_store_error() -> None:
    async with RedisLinkStore("redis://127.0.0.1:1/0", timeout_s=0.2) as store:
        with pytest.raises(LinkStoreError):
            await store.put_many([LINK])
        with pytest.raises(LinkStoreError):
            await store.click(LINK.code)


async def test_memory_store_expires_links() -> None:
    now = [time.monotonic()]
    store = InMemoryLinkStore(ttl_s=10, clock=lambda: now[0])
    await store.put_many([LINK])
    assert await store.click(LINK.code) == (LINK, 1)
    now[0] += 11
    assert await store.click(LINK.code) is None
