"""The base every Redis store shares: its error, its TTL check, its repr."""

from __future__ import annotations

import pytest

from ics_sms.stores.context import ContextStoreError, RedisContextStore
from ics_sms.stores.links import LinkStoreError, RedisLinkStore
from ics_sms.stores.redis import StoreError

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize("store_type", [RedisContextStore, RedisLinkStore])
def test_a_ttl_under_one_second_is_refused(store_type: type[RedisContextStore]) -> None:
    with pytest.raises(ValueError, match="ttl_s must be at least 1 second"):
        store_type(UNREACHABLE, ttl_s=0)


async def test_each_store_raises_its_own_error_under_one_root() -> None:
    contexts = RedisContextStore(UNREACHABLE, timeout_s=0.2)
    links = RedisLinkStore(UNREACHABLE, timeout_s=0.2)
    try:
        with pytest.raises(ContextStoreError, match="cannot read message contexts") as ctx:
            await contexts.get_many(["m-1"])
        with pytest.raises(LinkStoreError, match="cannot read short links") as link:
            await links.click("abc")
    finally:
        await contexts.close()
        await links.close()
    assert isinstance(ctx.value, StoreError) and isinstance(link.value, StoreError)
    assert not isinstance(ctx.value, LinkStoreError)


def test_repr_names_the_store_prefix_and_ttl() -> None:
    store = RedisLinkStore(UNREACHABLE, prefix="ics-sms:t1.", ttl_s=60)
    assert repr(store) == "<RedisLinkStore prefix='ics-sms:t1.' ttl_s=60>"
