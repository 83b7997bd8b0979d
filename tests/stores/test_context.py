"""Message contexts: written by workers, read by the receiver in one round trip."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from redis import Redis

from ics_sms.schemas.messages import Encoding, SendRequest
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import (
    ContextStore,
    ContextStoreError,
    InMemoryContextStore,
    MessageContext,
    RedisContextStore,
    open_context_store,
)

A = MessageContext(message_id="m-1", campaign_id="spring", sender="acme-otp",
                   metadata={"list": "vip", "tags": ["a", "b"]}, segments=2,
                   encoding=Encoding.UCS2)
B = MessageContext(message_id="m-2", campaign_id="spring")


class TestMessageContext:
    def test_for_request_takes_what_the_worker_knows(self) -> None:
        request = SendRequest(message_id="m-1", campaign_id="spring", to="+919812345678",
                              text="hi", metadata={"list": "vip", "tags": ["a", "b"]})
        context = MessageContext.for_request(request, sender="acme-otp", segments=2,
                                             encoding=Encoding.UCS2)
        assert context == A.model_copy(update={"urls": ()})

    def test_for_request_records_the_links_of_the_text(self) -> None:
        request = SendRequest(message_id="m-1", campaign_id="spring", to="+919812345678",
                              text="Sale! https://shop.example/sale, and (https://x.example/a).")
        context = MessageContext.for_request(request, sender="acme-otp")
        assert context.urls == ("https://shop.example/sale", "https://x.example/a")
        assert MessageContext.from_value("m-1", context.to_value()) == context
        assert context.has_link("HTTPS://SHOP.EXAMPLE/sale") is True
        assert context.has_link("https://shop.example/sale2") is False

    def test_unrecorded_links_are_unknown_not_absent(self) -> None:
        assert A.urls is None and A.has_link("https://shop.example/") is None
        no_links = A.model_copy(update={"urls": ()})
        assert no_links.has_link("https://shop.example/") is False
        assert orjson.loads(no_links.to_value())["urls"] == []

    def test_value_is_compact_json_without_empty_fields(self) -> None:
        assert orjson.loads(B.to_value()) == {"message_id": "m-2", "campaign_id": "spring"}
        assert b" " not in A.to_value()

    def test_value_reads_back_equal(self) -> None:
        assert MessageContext.from_value("m-1", A.to_value()) == A

    @pytest.mark.parametrize("value", [b"{", b"[]", b'{"message_id": "m-1"}', A.to_value()])
    def test_corrupt_or_foreign_values_are_refused(self, value: bytes) -> None:
        with pytest.raises(ValueError):
            MessageContext.from_value("m-9" if value == A.to_value() else "m-1", value)


class TestInMemory:
    async def test_put_then_get_many(self) -> None:
        store = InMemoryContextStore()
        await store.put_many([A, B])
        assert await store.get_many(["m-1", "m-2", "m-3"]) == {"m-1": A, "m-2": B}
        assert repr(store).startswith("<InMemoryContextStore entries=2 ")

    async def test_entries_expire_after_the_ttl(self) -> None:
        now = [1000.0]
        store = InMemoryContextStore(ttl_s=10, clock=lambda: now[0])
        await store.put_many([A])
        now[0] += 9.9
        assert await store.get_many(["m-1"]) == {"m-1": A}
        now[0] += 0.2
        assert await store.get_many(["m-1"]) == {}

    async def test_the_oldest_entries_go_beyond_the_size_bound(self) -> None:
        store = InMemoryContextStore(max_entries=2)
        c = MessageContext(message_id="m-3", campaign_id="spring")
        await store.put_many([A, B])
        await store.put_many([A, c])  # rewriting A makes it the newest
        assert set(await store.get_many(["m-1", "m-2", "m-3"])) == {"m-1", "m-3"}


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test only; the keys the tests write are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = Redis.from_url(redis_url)
    client.delete(*(prefix + m for m in ("m-1", "m-2", "m-3")))
    client.close()


@pytest.fixture
async def redis_store(redis_url: str, prefix: str) -> AsyncIterator[RedisContextStore]:
    store = RedisContextStore(redis_url, prefix=prefix, ttl_s=3600)
    yield store
    await store.close()


class TestRedis:
    async def test_put_then_get_many(self, redis_store: RedisContextStore) -> None:
        await redis_store.put_many([A, B])
        assert await redis_store.get_many(["m-1", "m-2", "m-3"]) == {"m-1": A, "m-2": B}

    async def test_values_are_stored_with_the_ttl(
        self, redis_store: RedisContextStore, redis_url: str, prefix: str
    ) -> None:
        await redis_store.put_many([A])
        client = Redis.from_url(redis_url)
        assert 3590 <= client.ttl(prefix + "m-1") <= 3600
        assert client.get(prefix + "m-1") == A.to_value()
        client.close()

    async def test_a_lookup_is_one_command(
        self, redis_store: RedisContextStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await redis_store.put_many([A, B])
        client: Any = redis_store._client
        commands: list[object] = []
        execute = client.execute_command

        async def counting(*args: Any, **kwargs: Any) -> Any:
            commands.append(args[0])
            return await execute(*args, **kwargs)

        monkeypatch.setattr(client, "execute_command", counting)
        found = await redis_store.get_many(["m-1", "m-2", "m-1", "m-3"])
        assert (set(found), commands) == ({"m-1", "m-2"}, ["MGET"])

    async def test_an_unreadable_value_is_skipped(
        self, redis_store: RedisContextStore, redis_url: str, prefix: str
    ) -> None:
        await redis_store.put_many([A])
        client = Redis.from_url(redis_url)
        client.set(prefix + "m-2", b"not json")
        client.close()
        assert await redis_store.get_many(["m-1", "m-2"]) == {"m-1": A}

    @pytest.mark.parametrize("planted", [
        A.to_value(),  # another message's context under m-2's key
        A.to_value() + b"," + B.to_value(),  # would add an element to a joined array
    ])
    async def test_values_that_do_not_belong_to_their_key_are_skipped(
        self, redis_store: RedisContextStore, redis_url: str, prefix: str, planted: bytes
    ) -> None:
        await redis_store.put_many([A])
        client = Redis.from_url(redis_url)
        client.set(prefix + "m-2", planted)
        client.close()
        assert await redis_store.get_many(["m-1", "m-2"]) == {"m-1": A}

    async def test_unreachable_redis_is_a_context_store_error(self) -> None:
        store = RedisContextStore("redis://127.0.0.1:9/0", timeout_s=0.5)
        with pytest.raises(ContextStoreError, match="cannot read"):
            await store.get_many(["m-1"])
        with pytest.raises(ContextStoreError, match="cannot store"):
            await store.put_many([A])
        await store.close()

    async def test_nothing_to_do_needs_no_round_trip(self) -> None:
        store = RedisContextStore("redis://127.0.0.1:9/0")
        assert await store.get_many([]) == {}
        await store.put_many([])
        await store.close()


@pytest.mark.parametrize(("url", "kind"), [("memory://", InMemoryContextStore),
                                           ("redis://127.0.0.1:6379/0", RedisContextStore)])
async def test_open_context_store_follows_the_settings(
    url: str, kind: type[ContextStore]
) -> None:
    store = open_context_store(Settings(redis_url=url, namespace="ns."))
    assert isinstance(store, kind)
    if isinstance(store, RedisContextStore):
        assert store.key("m-1") == "ics-sms:ns.ctx:m-1"
    await store.close()
