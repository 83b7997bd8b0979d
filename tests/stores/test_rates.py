"""Fleet-wide sender rates: the same schedule and pauses on Redis and in memory.

The in-memory store runs on a clock the test moves; the Redis store takes its clock from
Redis ``TIME`` (shared by every worker), so on Redis the figures are compared with the
few milliseconds the test itself takes in mind (``ABS``).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
from redis import Redis

from ics_sms.schemas.settings import Settings
from ics_sms.stores.rates import (
    ACTIVE_S,
    IDLE_TTL_S,
    Grant,
    InMemoryRateStore,
    RateStore,
    RateStoreError,
    RedisRateStore,
    open_rate_store,
)
from tests.stores.conftest import Clock

ABS = 0.05
"""Slack for the time that passes between two calls on the Redis clock."""
SENDERS = ("otp", "offers")


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:rate:"


@pytest.fixture
async def redis_stores(redis_url: str, prefix: str) -> AsyncIterator[list[RedisRateStore]]:
    """Redis rate stores of one fleet (one prefix), as separate workers would have them."""
    stores: list[RedisRateStore] = []
    yield stores
    for store in stores:
        await store.close()
    client = Redis.from_url(redis_url)  # the keys expire anyway, IDLE_TTL_S after use
    client.delete(*(f"{prefix}{fleet}{sender}" for fleet in ("", "blue.", "green.")
                    for sender in SENDERS))
    client.close()


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest, prefix: str) -> RateStore:
    if request.param == "memory":
        return InMemoryRateStore(clock=Clock())
    stores: list[RedisRateStore] = request.getfixturevalue("redis_stores")
    stores.append(RedisRateStore(request.getfixturevalue("redis_url"), prefix=prefix))
    return stores[-1]


async def test_an_idle_sender_sends_at_once_then_batches_follow_at_the_rate(
        store: RateStore) -> None:
    first = await store.acquire("otp", 50, 100.0)
    assert first == Grant() and first.granted
    second = await store.acquire("otp", 20, 100.0)
    third = await store.acquire("otp", 10, 100.0)
    assert second.wait_s == pytest.approx(0.5, abs=ABS)  # after the first batch's 50
    assert third.wait_s == pytest.approx(0.7, abs=ABS)  # after 50 + 20 records
    assert (second.throttled_s, third.refused_s) == (0.0, 0.0)


async def test_senders_have_schedules_of_their_own(store: RateStore) -> None:
    await store.acquire("otp", 100, 10.0)
    assert (await store.acquire("offers", 1, 10.0)).wait_s == 0.0
    assert (await store.acquire("otp", 1, 10.0)).wait_s == pytest.approx(10.0, abs=ABS)


async def test_the_rate_of_the_request_prices_it(store: RateStore) -> None:
    # A sender's rate edited while the fleet runs: each batch is priced at the rate its
    # worker knows; the schedule already reserved stays.
    await store.acquire("otp", 100, 100.0)  # 1 s
    await store.acquire("otp", 100, 50.0)  # 2 s more
    assert (await store.acquire("otp", 1, 50.0)).wait_s == pytest.approx(3.0, abs=ABS)


async def test_a_429_throttles_the_sender_then_the_rate_resumes(store: RateStore) -> None:
    await store.pause("otp", throttled_s=2.0)
    after = await store.acquire("otp", 10, 100.0)
    assert after.granted
    assert after.wait_s == pytest.approx(2.0, abs=ABS)
    assert after.throttled_s == pytest.approx(after.wait_s, abs=ABS)
    nxt = await store.acquire("otp", 10, 100.0)
    assert nxt.wait_s == pytest.approx(2.1, abs=ABS)  # one after the other, from its end
    assert (await store.acquire("offers", 1, 100.0)).wait_s == 0.0


async def test_refused_credentials_grant_nothing(store: RateStore) -> None:
    await store.pause("otp", refused_s=30.0)
    held = await store.acquire("otp", 100, 10.0)
    assert not held.granted
    assert held.refused_s == pytest.approx(30.0, abs=ABS)
    assert held.wait_s == 0.0
    assert (await store.acquire("otp", 100, 10.0)).refused_s == pytest.approx(30.0, abs=ABS)


async def test_a_shorter_pause_does_not_cut_a_longer_one(store: RateStore) -> None:
    await store.pause("otp", throttled_s=20.0, refused_s=40.0)
    await store.pause("otp", throttled_s=1.0)
    await store.pause("otp", refused_s=2.0)
    assert (await store.acquire("otp", 1, 1.0)).refused_s == pytest.approx(40.0, abs=ABS)


async def test_nothing_to_pause_is_no_pause(store: RateStore) -> None:
    await store.pause("otp")
    assert await store.acquire("otp", 1, 1.0) == Grant()


async def test_a_cost_and_a_rate_must_make_sense(store: RateStore) -> None:
    with pytest.raises(ValueError, match="cost"):
        await store.acquire("otp", -1, 1.0)
    with pytest.raises(ValueError, match="rate_per_s"):
        await store.acquire("otp", 1, 0.0)


# -- in memory: the clock moves -------------------------------------------------------------


async def test_time_that_passed_is_not_saved_up_as_a_burst() -> None:
    clock = Clock()
    store = InMemoryRateStore(clock=clock)
    assert (await store.acquire("otp", 100, 100.0)).wait_s == 0
    clock.now += 0.25
    assert (await store.acquire("otp", 100, 100.0)).wait_s == pytest.approx(0.75)
    clock.now += 60  # idle for a minute
    assert (await store.acquire("otp", 100, 100.0)).wait_s == 0
    assert (await store.acquire("otp", 1, 100.0)).wait_s == pytest.approx(1.0)


async def test_pauses_end_on_the_clock() -> None:
    clock = Clock()
    store = InMemoryRateStore(clock=clock)
    await store.pause("otp", throttled_s=3.0, refused_s=5.0)
    clock.now += 4
    assert (await store.acquire("otp", 1, 10.0)).refused_s == pytest.approx(1.0)
    clock.now += 1
    assert await store.acquire("otp", 10, 10.0) == Grant()  # throttle over, refusal over
    assert (await store.acquire("otp", 1, 10.0)).wait_s == pytest.approx(1.0)


async def test_workers_count_while_they_ask() -> None:
    clock = Clock()
    store = InMemoryRateStore(clock=clock)
    assert (await store.acquire("otp", 1, 100.0)).workers == 1  # nameless: at least one
    assert (await store.acquire("otp", 1, 100.0, worker="w1")).workers == 1
    assert (await store.acquire("otp", 1, 100.0, worker="w2")).workers == 2
    assert (await store.acquire("otp", 1, 100.0, worker="w1")).workers == 2
    assert (await store.acquire("offers", 1, 100.0, worker="w1")).workers == 1
    clock.now += ACTIVE_S / 2
    assert (await store.acquire("otp", 1, 100.0, worker="w2")).workers == 2
    clock.now += ACTIVE_S / 2 + 1  # w1 stopped asking: no longer shares the rate
    assert (await store.acquire("otp", 1, 100.0, worker="w2")).workers == 1


async def test_idle_schedules_are_forgotten() -> None:
    clock = Clock()
    store = InMemoryRateStore(clock=clock)
    for i in range(100):
        await store.acquire(f"s{i}", 1, 1.0)
    clock.now += IDLE_TTL_S + 10
    await store.acquire("fresh", 1, 1.0)
    assert repr(store) == "<InMemoryRateStore senders=1>"


# -- Redis: one schedule for the whole fleet ------------------------------------------------


async def test_every_worker_of_the_fleet_shares_the_schedule(
        redis_url: str, prefix: str, redis_stores: list[RedisRateStore]) -> None:
    workers = [RedisRateStore(redis_url, prefix=prefix) for _ in range(3)]
    redis_stores.extend(workers)
    waits = [(await worker.acquire("otp", 100, 100.0)).wait_s for worker in workers]
    assert waits == [0.0, pytest.approx(1.0, abs=ABS), pytest.approx(2.0, abs=ABS)]
    await workers[0].pause("otp", refused_s=10.0)
    assert not (await workers[2].acquire("otp", 1, 100.0)).granted


async def test_the_fleet_counts_the_workers_sending_for_a_sender(
        redis_url: str, prefix: str, redis_stores: list[RedisRateStore]) -> None:
    workers = [RedisRateStore(redis_url, prefix=prefix) for _ in range(3)]
    redis_stores.extend(workers)
    counts = [(await w.acquire("otp", 1, 100.0, worker=f"w{i}")).workers
              for i, w in enumerate(workers)]
    assert counts == [1, 2, 3]
    assert (await workers[0].acquire("otp", 1, 100.0, worker="w0")).workers == 3
    assert (await workers[0].acquire("offers", 1, 100.0, worker="w0")).workers == 1
    await workers[1].pause("otp", refused_s=10.0)
    refused = await workers[2].acquire("otp", 1, 100.0, worker="w2")
    assert not refused.granted and refused.workers == 3


async def test_concurrent_requests_lose_no_reservation(
        redis_url: str, prefix: str, redis_stores: list[RedisRateStore]) -> None:
    """200 requests of 4 records from 8 clients at once: the schedule holds all 800."""
    workers = [RedisRateStore(redis_url, prefix=prefix) for _ in range(8)]
    redis_stores.extend(workers)
    grants = await asyncio.gather(*(workers[i % 8].acquire("otp", 4, 100.0)
                                    for i in range(200)))
    waits = sorted(g.wait_s for g in grants)
    assert waits[0] == 0.0
    # each request waited behind the ones granted before it: 0.04 s apart, to within
    # the time the requests themselves took to reach Redis
    assert waits[-1] == pytest.approx(199 * 0.04, abs=0.5)
    last = await workers[0].acquire("otp", 1, 100.0)
    assert last.wait_s == pytest.approx(8.0, abs=0.5)
    assert all(b - a < 0.04 + ABS for a, b in itertools.pairwise(waits))


async def test_fleets_in_other_namespaces_do_not_meet(
        redis_url: str, prefix: str, redis_stores: list[RedisRateStore]) -> None:
    one = RedisRateStore(redis_url, prefix=f"{prefix}blue.")
    two = RedisRateStore(redis_url, prefix=f"{prefix}green.")
    redis_stores.extend([one, two])
    await one.pause("otp", refused_s=10)
    await one.acquire("offers", 100, 1.0)
    assert await two.acquire("otp", 1, 1.0) == Grant()
    assert await two.acquire("offers", 1, 1.0) == Grant()


async def test_a_senders_key_expires_once_idle(
        redis_url: str, prefix: str, redis_stores: list[RedisRateStore]) -> None:
    store = RedisRateStore(redis_url, prefix=prefix)
    redis_stores.append(store)
    await store.acquire("otp", 500, 100.0)  # scheduled 5 s ahead
    client = Redis.from_url(redis_url)
    ttl_ms = client.pttl(f"{prefix}otp")
    assert (IDLE_TTL_S + 4) * 1000 < ttl_ms <= (IDLE_TTL_S + 5) * 1000
    await store.pause("otp", refused_s=100.0)
    assert client.pttl(f"{prefix}otp") > (IDLE_TTL_S + 99) * 1000
    client.close()


async def test_an_unreachable_redis_is_a_rate_store_error() -> None:
    store = RedisRateStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    try:
        with pytest.raises(RateStoreError, match="cannot reserve the sender's rate"):
            await store.acquire("otp", 1, 1.0)
        with pytest.raises(RateStoreError, match="cannot record the sender's pause"):
            await store.pause("otp", throttled_s=1.0)
    finally:
        await store.close()


def test_the_settings_choose_the_store() -> None:
    base = Settings(callback_secret="x" * 32)
    memory = open_rate_store(base.model_copy(update={"redis_url": "memory://"}))
    assert isinstance(memory, InMemoryRateStore)
    redis = open_rate_store(base.model_copy(update={"redis_url": "redis://127.0.0.1:1/0",
                                                    "namespace": "blue."}))
    assert isinstance(redis, RedisRateStore)
    assert repr(redis) == "<RedisRateStore prefix='ics-sms:blue.rate:' ttl_s=60>"


async def test_a_worker_waiting_for_its_slow_batch_still_counts() -> None:
    """A slow sender's batches are granted minutes apart: a worker counts until its
    granted moment (and ACTIVE_S after), not only ACTIVE_S after it asked."""
    clock = Clock()
    store = InMemoryRateStore(clock=clock)
    grants = [await store.acquire("slow", 100, 1.0, worker=f"w{i}") for i in range(4)]
    assert [g.workers for g in grants] == [1, 2, 3, 4]
    assert grants[-1].wait_s == pytest.approx(300)
    clock.now += 200  # w0 and w1 sent; w2 and w3 still wait for their moment
    assert (await store.acquire("slow", 100, 1.0, worker="w0")).workers == 3
