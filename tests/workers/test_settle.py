"""The one place that acks: publish first, then ack with as few frames as possible."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ics_sms.broker.base import Broker, Consumer, Delivery, OnDelivery, Outgoing, PublishFailed
from ics_sms.schemas.topology import Topology
from ics_sms.workers.settle import AckTracker, Settler


class RecordingBroker(Broker):
    """Records acks/nacks and publishes; can refuse the next N publishes."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.nacks: list[int] = []
        self.published: list[Outgoing] = []
        self.refuse = 0

    @property
    def closed(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def declare(self, topology: Topology) -> None: ...

    async def queue_depth(self, queue: str) -> int:
        return 0

    async def declare_tail_queue(self, exchange: str, routing_keys: Sequence[str]) -> str:
        raise NotImplementedError

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise PublishFailed("nack")
        self.published.extend(messages)

    async def consume(self, queue: str, prefetch: int, on_delivery: OnDelivery) -> Consumer:
        raise NotImplementedError

    def ack(self, delivery: Delivery, *, multiple: bool = False) -> None:
        self.acks.append((delivery.tag, multiple))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self.nacks.append(delivery.tag)


def deliveries(*tags: int) -> list[Delivery]:
    return [Delivery(b"", "x", "k", tag, False, 0, "q") for tag in tags]


def tracked(broker: RecordingBroker, items: list[Delivery]) -> AckTracker:
    tracker = AckTracker(broker)
    for delivery in items:
        tracker.track(delivery)
    return tracker


def test_a_settled_run_is_acked_with_one_multiple_ack() -> None:
    broker = RecordingBroker()
    items = deliveries(1, 2, 3, 4)
    tracker = tracked(broker, items)
    tracker.ack(items)
    assert broker.acks == [(4, True)]
    assert len(tracker) == 0


def test_a_delivery_behind_an_unsettled_one_is_acked_alone_and_not_twice() -> None:
    broker = RecordingBroker()
    items = deliveries(1, 2, 3)
    tracker = tracked(broker, items)
    tracker.ack(items[1:])
    assert broker.acks == [(2, False), (3, False)]
    tracker.ack(items[:1])
    assert broker.acks[-1] == (1, True)
    assert len(broker.acks) == 3


def test_nacked_deliveries_do_not_block_and_are_not_acked() -> None:
    broker = RecordingBroker()
    items = deliveries(1, 2)
    tracker = tracked(broker, items)
    tracker.forget(items[0])
    tracker.ack(items[1:])
    assert broker.acks == [(2, True)]


async def test_settle_publishes_before_acking() -> None:
    broker = RecordingBroker()
    items = deliveries(1, 2)
    settler = Settler(broker, tracked(broker, items))
    message: Any = Outgoing("e", "k", b"event")
    assert await settler.settle([(items[0], [message]), (items[1], [message])])
    assert len(broker.published) == 2 and broker.acks == [(2, True)]


async def test_publish_refused_repeatedly_requeues_instead_of_acking() -> None:
    broker = RecordingBroker()
    broker.refuse = 10
    items = deliveries(1)
    settler = Settler(broker, tracked(broker, items))
    assert not await settler.settle([(items[0], [Outgoing("e", "k", b"x")])])
    assert broker.acks == [] and broker.nacks == [1]


async def test_refused_events_come_back_later_through_the_fallback() -> None:
    broker = RecordingBroker()
    broker.refuse = 3  # every try of the events; the delayed copy goes through
    items = deliveries(1)
    later = Outgoing("retry", "delay", b"again")
    settler = Settler(broker, tracked(broker, items), later=lambda _delivery: later)
    assert not await settler.settle([(items[0], [Outgoing("e", "k", b"x")])])
    assert broker.published == [later]
    assert broker.acks == [(1, True)] and broker.nacks == []


async def test_a_transient_refusal_is_retried() -> None:
    broker = RecordingBroker()
    broker.refuse = 1
    items = deliveries(1)
    settler = Settler(broker, tracked(broker, items))
    assert await settler.settle([(items[0], [Outgoing("e", "k", b"x")])])
    assert broker.acks == [(1, True)]
