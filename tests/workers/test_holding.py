"""The holding bound: no sender's held messages outlive the broker's consumer timeout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Lane, Senders, new_tracking_token
from ics_sms.schemas.settings import Settings
from ics_sms.stores.rates import InMemoryRateStore
from ics_sms.workers.holding import SAFE_SHARE, HoldBound
from ics_sms.workers.service import Worker
from tests.workers.conftest import PROMO, SERVICE, FakeIcs, Pipeline, fixed_clock, request

NOON_IST = datetime(2026, 11, 27, 6, 30, tzinfo=UTC)

RABBITMQ_DEFAULT = HoldBound(consumer_timeout_s=1800)


def test_a_sender_holds_what_it_sends_in_half_the_consumer_timeout() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 0.5})
    assert SAFE_SHARE == 0.5 and RABBITMQ_DEFAULT.safe_s == 900
    assert RABBITMQ_DEFAULT.per_sender(slow) == 450  # 450 messages take 900 s at 0.5/s
    assert RABBITMQ_DEFAULT.per_sender(PROMO) == 100_000 * 900


def test_workers_sharing_a_sender_hold_their_share_of_it() -> None:
    """The fleet shares a sender's rate: 4 workers sending for it hold a quarter each, so
    together they never hold more than the fleet sends before the consumer timeout."""
    slow = PROMO.model_copy(update={"rate_per_s": 0.5})
    assert [RABBITMQ_DEFAULT.per_sender(slow, n) for n in (1, 2, 4, 0)] == [450, 225, 112, 450]
    # a parked delivery comes back once this worker's share has sent what it holds
    assert RABBITMQ_DEFAULT.park_s(slow, 10, workers=4) == RABBITMQ_DEFAULT.park_s(slow, 40)


def test_even_the_slowest_sender_holds_one_message() -> None:
    glacial = PROMO.model_copy(update={"rate_per_s": 0.0001})
    assert RABBITMQ_DEFAULT.per_sender(glacial) == 1


@pytest.mark.parametrize(("rates", "configured", "expected"), [
    ((100.0,), 1000, 1000),           # fast lane: the configured prefetch stands
    ((0.5,), 1000, 450),              # one slow sender: what it sends in 900 s
    ((0.5, 0.5), 1000, 900),          # the lane's senders together
    ((0.0001,), 1000, 1),             # never below one
])
def test_lane_prefetch_is_capped_by_what_the_lanes_senders_send(
        rates: tuple[float, ...], configured: int, expected: int) -> None:
    senders = [PROMO.model_copy(update={"name": f"p{i}", "rate_per_s": rate})
               for i, rate in enumerate(rates)]
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.PROMOTIONAL, senders, configured) == expected


def test_other_lanes_and_disabled_senders_do_not_count() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 0.5})
    off = PROMO.model_copy(update={"name": "off", "rate_per_s": 1000.0, "disabled": "paused"})
    fast_service = SERVICE.model_copy(update={"rate_per_s": 1000.0})
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.PROMOTIONAL, [slow, off, fast_service],
                                          1000) == 450
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.SERVICE, [slow, off], 2000) == 2000  # none


def test_a_parked_message_comes_back_once_what_is_held_is_about_sent() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 2.0})
    assert RABBITMQ_DEFAULT.park_s(slow, 20) == 10.0
    assert RABBITMQ_DEFAULT.park_s(slow, 1) == 1.0          # the shortest delay tier
    assert RABBITMQ_DEFAULT.park_s(slow, 1800) == 300.0     # the longest delay tier


async def test_a_worker_sharing_a_slow_sender_with_another_holds_only_its_share(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    """Another worker sends for SLOW too (it asked the shared rate store just now): this
    worker holds half of what SLOW sends before the consumer timeout, once it knows."""
    slow = SERVICE.model_copy(update={"name": "slow", "sender_id": "SLOWIN", "rate_per_s": 3.0,
                                      "tracking_token": new_tracking_token()})
    settings = worker_settings.model_copy(update={"consumer_timeout_s": 2.0,
                                                  "linger_ms": 1000.0})
    senders = Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE, slow.name: slow})
    rates = InMemoryRateStore()
    await rates.acquire(slow.name, 1, slow.rate_per_s, worker="the-other-worker")
    await pipeline.publish(*[request(i, sender=slow.name) for i in range(5)])
    worker = Worker(settings, senders, clock=fixed_clock(NOON_IST), rate_store=rates)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        events = await pipeline.next_events(5)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task
    assert {e.message_id for e in events} == {f"m{i}" for i in range(5)}
    assert all(e.status is Status.SUBMITTED and e.attempt == 1 for e in events)
    # before its first request it knew of no other worker: it held 3 (what SLOW sends in
    # half of 2 s); from then on 1 (its half), the rest parked and came back one by one
    sizes = [len(r["smstosend"]) for r in fake_ics.requests]
    assert sizes[0] == 3 and set(sizes[1:]) == {1} and sum(sizes) == 5
