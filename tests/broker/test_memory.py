"""The embedded broker keeps the RabbitMQ semantics the services rely on."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ics_sms.broker.base import ConnectionLost, Delivery, Outgoing, PublishFailed, TopologyConflict
from ics_sms.broker.memory import MemoryBroker, topic_matches
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import QueueType, Topology

TOPOLOGY = Topology()


@pytest.fixture
async def broker() -> MemoryBroker:
    memory = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    await memory.connect()
    await memory.declare(TOPOLOGY)
    return memory


def send(body: bytes, lane: Lane = Lane.SERVICE) -> Outgoing:
    return Outgoing(TOPOLOGY.send_exchange, TOPOLOGY.send_routing_key(lane), body)


async def collect(broker: MemoryBroker, queue: str, count: int,
                  prefetch: int = 100) -> list[Delivery]:
    got: asyncio.Queue[Delivery] = asyncio.Queue()
    consumer = await broker.consume(queue, prefetch, got.put_nowait)
    async with asyncio.timeout(10):
        result = [await got.get() for _ in range(count)]
    await consumer.cancel()
    return result


@pytest.mark.parametrize(("pattern", "key", "expected"), [
    ("#", "sms.delivered", True),
    ("sms.*", "sms.delivered", True),
    ("sms.*", "sms.a.b", False),
    ("sms.#", "sms", True),
    ("sms.#", "sms.a.b", True),
    ("*.delivered", "sms.delivered", True),
    ("sms.failed", "sms.delivered", False),
    ("#.b", "a.x.b", True),
])
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


async def test_publish_routes_by_lane_and_unroutable_fails(broker: MemoryBroker) -> None:
    await broker.publish([send(b"1"), send(b"2", Lane.PROMOTIONAL)])
    assert await broker.queue_depth(TOPOLOGY.send_queue(Lane.SERVICE)) == 1
    assert await broker.queue_depth(TOPOLOGY.send_queue(Lane.PROMOTIONAL)) == 1
    with pytest.raises(PublishFailed):
        await broker.publish([Outgoing(TOPOLOGY.send_exchange, "nowhere", b"x")])


async def test_unacked_messages_come_back_redelivered_when_a_connection_drops(
    broker: MemoryBroker,
) -> None:
    await broker.publish([send(b"a"), send(b"b")])
    consumer_side = MemoryBroker(f"memory://{id(broker.hub)}")
    consumer_side.hub = broker.hub
    await consumer_side.connect()
    first = await collect(consumer_side, TOPOLOGY.send_queue(Lane.SERVICE), 2)
    assert [d.redelivered for d in first] == [False, False]
    consumer_side.crash()
    with pytest.raises(ConnectionLost):
        await consumer_side.closed
    again = await collect(broker, TOPOLOGY.send_queue(Lane.SERVICE), 2)
    assert [d.body for d in again] == [b"a", b"b"]
    assert all(d.redelivered for d in again)


async def test_ack_multiple_settles_every_earlier_delivery(broker: MemoryBroker) -> None:
    await broker.publish([send(str(i).encode()) for i in range(5)])
    deliveries = await collect(broker, TOPOLOGY.send_queue(Lane.SERVICE), 5)
    broker.ack(deliveries[3], multiple=True)
    assert len(broker.owner) == 1
    broker.nack(deliveries[4], requeue=True)
    [back] = await collect(broker, TOPOLOGY.send_queue(Lane.SERVICE), 1)
    assert back.body == b"4" and back.redelivered


async def test_delay_queue_dead_letters_back_to_the_lane_after_its_ttl(
    broker: MemoryBroker,
) -> None:
    tier = 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    await broker.publish([Outgoing(TOPOLOGY.retry_exchange,
                                   TOPOLOGY.delay_routing_key(Lane.PROMOTIONAL, tier), b"r")])
    [delivery] = await collect(broker, TOPOLOGY.send_queue(Lane.PROMOTIONAL), 1)
    assert loop.time() - started >= tier * 0.9
    assert delivery.headers["x-death"][0]["reason"] == "expired"


async def test_delivery_limit_dead_letters_a_message_that_keeps_failing(
    broker: MemoryBroker,
) -> None:
    queue = TOPOLOGY.send_queue(Lane.SERVICE)
    limit = broker.hub.queues[queue].delivery_limit
    assert limit is not None
    await broker.publish([send(b"poison")])
    for _ in range(limit + 1):
        [delivery] = await collect(broker, queue, 1)
        broker.nack(delivery, requeue=True)
    [dead] = await collect(broker, TOPOLOGY.dead_queue, 1)
    assert dead.body == b"poison"
    assert dead.headers["x-first-death-reason"] == "delivery_limit"


async def test_events_route_by_topic(broker: MemoryBroker) -> None:
    await broker.publish([Outgoing(TOPOLOGY.events_exchange, "sms.delivered", b"e")])
    [event] = await collect(broker, TOPOLOGY.events_queue, 1)
    assert event.routing_key == "sms.delivered"


async def test_prefetch_bounds_unacked_deliveries(broker: MemoryBroker) -> None:
    await broker.publish([send(b"x") for _ in range(10)])
    got: list[Delivery] = []
    await broker.consume(TOPOLOGY.send_queue(Lane.SERVICE), 3, got.append)
    await asyncio.sleep(0)  # deliveries are handed over on the next loop turn
    assert len(got) == 3
    broker.ack(got[-1], multiple=True)
    await asyncio.sleep(0)
    assert len(got) == 6


async def test_conflicting_declaration_is_refused(broker: MemoryBroker) -> None:
    with pytest.raises(TopologyConflict):
        await broker.declare(Topology(queue_type=QueueType.CLASSIC))
