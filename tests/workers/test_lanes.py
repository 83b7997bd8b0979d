"""Dedicated lane workers and the holding bound, on real RabbitMQ and the embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ics_sms.broker.base import Broker, Consumer, OnDelivery
from ics_sms.broker.connect import connect_once
from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Lane, Senders, new_tracking_token
from ics_sms.schemas.settings import Settings
from ics_sms.workers.service import Worker, consumed_lanes
from tests.workers.conftest import PROMO, SERVICE, FakeIcs, Pipeline, fixed_clock, request

NOON_IST = datetime(2026, 11, 27, 6, 30, tzinfo=UTC)
SLOW = SERVICE.model_copy(update={"name": "slow", "sender_id": "SLOWIN", "rate_per_s": 3.0,
                                  "tracking_token": new_tracking_token()})
SLOW_PROMO = PROMO.model_copy(update={"name": "slowpromo", "sender_id": "512399",
                                      "rate_per_s": 3.0, "tracking_token": new_tracking_token()})


class Recorded:
    """Which queues the worker consumed, with which prefetch."""

    def __init__(self) -> None:
        self.prefetch: dict[str, int] = {}

    async def broker(self, settings: Settings) -> Broker:
        broker = await connect_once(settings, name="test worker")
        consume = broker.consume

        async def recording(queue: str, prefetch: int, on_delivery: OnDelivery) -> Consumer:
            self.prefetch[queue] = prefetch
            return await consume(queue, prefetch, on_delivery)

        broker.consume = recording  # type: ignore[method-assign]
        return broker


@contextlib.asynccontextmanager
async def worker_on(settings: Settings, senders: Senders,
                    recorded: Recorded) -> AsyncIterator[Worker]:
    worker = Worker(settings, senders, clock=fixed_clock(NOON_IST),
                    broker_factory=recorded.broker)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(10):
        await worker.ready.wait()
    try:
        yield worker
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def both() -> Senders:
    return Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE, PROMO.name: PROMO})


def test_lanes_setting_names_the_consumed_lanes() -> None:
    assert consumed_lanes("all") == (Lane.SERVICE, Lane.PROMOTIONAL)
    assert consumed_lanes("service") == (Lane.SERVICE,)
    assert consumed_lanes("promotional") == (Lane.PROMOTIONAL,)


async def test_a_service_lane_worker_leaves_promotional_messages_to_others(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    settings = worker_settings.model_copy(update={"worker_lanes": "service"})
    topology = settings.topology
    await pipeline.publish(request(1, sender=PROMO.name), lane=Lane.PROMOTIONAL)
    await pipeline.publish(request(2, sender=PROMO.name), lane=Lane.SERVICE)  # wrong lane
    await pipeline.publish(request(3))
    recorded = Recorded()
    async with worker_on(settings, both(), recorded):
        [event] = await pipeline.next_events(1)
    # the worker stopped once its settlements were done: the wrongly laned message was
    # moved to its lane, where it waits with the other for a promotional-lane worker
    assert await pipeline.broker.queue_depth(topology.send_queue(Lane.PROMOTIONAL)) == 2
    assert event.message_id == "m3" and event.status is Status.SUBMITTED
    assert list(recorded.prefetch) == [topology.send_queue(Lane.SERVICE)]
    assert [r["from"] for r in fake_ics.records] == [SERVICE.sender_id]


async def test_a_promotional_lane_worker_sends_only_promotional_messages(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    settings = worker_settings.model_copy(update={"worker_lanes": "promotional"})
    topology = settings.topology
    await pipeline.publish(request(1))
    await pipeline.publish(request(2, sender=PROMO.name), lane=Lane.PROMOTIONAL)
    recorded = Recorded()
    async with worker_on(settings, both(), recorded):
        [event] = await pipeline.next_events(1)
        assert await pipeline.broker.queue_depth(topology.send_queue(Lane.SERVICE)) == 1
    assert event.message_id == "m2" and event.sender == PROMO.name
    # alone in its process, the promotional lane gets the whole prefetch (shared: a part)
    assert recorded.prefetch == {topology.send_queue(Lane.PROMOTIONAL): settings.prefetch}


async def test_the_prefetch_of_a_lane_of_slow_senders_fits_the_consumer_timeout(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    settings = worker_settings.model_copy(update={"consumer_timeout_s": 4.0, "prefetch": 500})
    senders = Senders(default=SLOW.name, senders={SLOW.name: SLOW, PROMO.name: PROMO})
    recorded = Recorded()
    async with worker_on(settings, senders, recorded):
        pass
    topology = settings.topology
    assert recorded.prefetch == {  # 3/s for half of 4 s; the promotional lane is fast
        topology.send_queue(Lane.SERVICE): 6,
        topology.send_queue(Lane.PROMOTIONAL): min(500, settings.batch_max),
    }


async def test_a_slow_sender_parks_what_it_cannot_send_before_the_consumer_timeout(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    # SLOW_PROMO sends 3/s: with a 2 s consumer timeout it may hold 3 messages; a fast
    # sender in its lane keeps the lane's prefetch large, so all 5 arrive within one (long)
    # linger (of the promotional lane: the service lane does not linger while idle).
    settings = worker_settings.model_copy(update={"consumer_timeout_s": 2.0,
                                                  "linger_ms": 1000.0})
    senders = Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE, PROMO.name: PROMO,
                                                     SLOW_PROMO.name: SLOW_PROMO})
    await pipeline.publish(*[request(i, sender=SLOW_PROMO.name) for i in range(5)],
                           lane=Lane.PROMOTIONAL)
    async with worker_on(settings, senders, Recorded()):
        events = await pipeline.next_events(5)
    assert {e.message_id for e in events} == {f"m{i}" for i in range(5)}
    assert all(e.status is Status.SUBMITTED and e.attempt == 1 for e in events)
    # three were held and sent together; two were parked and came back after it
    assert [len(r["smstosend"]) for r in fake_ics.requests] == [3, 2]
