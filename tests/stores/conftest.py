"""The message store suite runs every case on Redis and in memory, on a clock it moves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis import Redis

from ics_sms.stores.messages import InMemoryMessageStore, MessageStore, RedisMessageStore

DEADLINE_S = 100.0
"""The receipt deadline of the stores the fixture makes."""


class Clock:
    """A clock the test moves by hand (epoch seconds)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[MessageStore]:
    if request.param == "memory":
        yield InMemoryMessageStore(receipt_deadline_s=DEADLINE_S, clock=clock)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = f"test:{uuid.uuid4().hex[:8]}:msg:"
    redis_store = RedisMessageStore(url, prefix=prefix, receipt_deadline_s=DEADLINE_S,
                                    clock=clock)
    yield redis_store
    await redis_store.close()
    client = Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()
