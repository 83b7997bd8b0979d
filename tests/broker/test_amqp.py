"""AmqpBroker on a real RabbitMQ: confirms, acks, conflicts and lost connections.

Every test works in a namespace of its own (``amqp_settings`` deletes it afterwards). Waiting
is always for an event (a delivery, a future) under a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from ics_sms.broker.amqp import AmqpBroker
from ics_sms.broker.base import ConnectionLost, Delivery, Outgoing, PublishFailed, TopologyConflict
from ics_sms.broker.codec import event_message
from ics_sms.broker.connect import open_broker
from ics_sms.schemas.messages import ReceiptEvent, Status, make_event_id
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_ATTEMPT, Topology

TIMEOUT_S = 15.0


# -- helpers: an independent view of the broker (pika BlockingConnection) -------------------


def _blocking(url: str, action: Callable[[Any], Any]) -> Any:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return action(connection.channel())
    finally:
        connection.close()


async def depth(url: str, queue: str) -> int:
    """Messages ready in ``queue``, seen through a connection of its own."""

    def count(channel: Any) -> int:
        return int(channel.queue_declare(queue, passive=True).method.message_count)

    return int(await asyncio.to_thread(_blocking, url, count))


async def get_one(url: str, queue: str) -> tuple[Any, Any, bytes]:
    """Take one message off ``queue`` (method, properties, body)."""

    def get(channel: Any) -> tuple[Any, Any, bytes]:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None, f"{queue} is empty"
        return method, properties, body

    result: tuple[Any, Any, bytes] = await asyncio.to_thread(_blocking, url, get)
    return result


class Inbox:
    """Collects deliveries; ``next()`` waits for one under a timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def __call__(self, delivery: Delivery) -> None:
        self.queue.put_nowait(delivery)

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT_S)

    async def take(self, count: int) -> list[Delivery]:
        return [await self.next() for _ in range(count)]


def send(topology: Topology, body: bytes = b'{"n": 0}', lane: Lane = Lane.SERVICE,
         **extra: Any) -> Outgoing:
    return Outgoing(topology.send_exchange, topology.send_routing_key(lane), body, **extra)


def numbered(topology: Topology, count: int, start: int = 0) -> list[Outgoing]:
    return [send(topology, f'{{"n": {i}}}'.encode(), message_id=f"m{i}")
            for i in range(start, start + count)]


@pytest.fixture
async def broker(amqp_settings: Settings, topology: Topology) -> AsyncIterator[AmqpBroker]:
    """A connected broker with the test's topology declared."""
    amqp = AmqpBroker(amqp_settings.broker_url.get_secret_value(), connection_name="test")
    await amqp.connect()
    await amqp.declare(topology)
    yield amqp
    with contextlib.suppress(ConnectionLost):
        await amqp.close()


@pytest.fixture
def url(amqp_settings: Settings) -> str:
    return amqp_settings.broker_url.get_secret_value()


# -- a TCP proxy that can withhold the broker's answers or cut the connection --------------


class FaultyProxy:
    """Relays a client to RabbitMQ; ``freeze()`` holds broker→client bytes, ``cut()`` drops."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        for task in (self._pipe(reader, up_writer, None),
                     self._pipe(up_reader, writer, self._flowing)):
            self._tasks.add(asyncio.create_task(task))

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    gate: asyncio.Event | None) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if gate is not None:
                    await gate.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxied_url(url: str) -> AsyncIterator[tuple[str, FaultyProxy]]:
    parts = urlsplit(url)
    proxy = FaultyProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    await proxy.close()


# -- declaring the topology -----------------------------------------------------------------


async def test_declare_is_idempotent(broker: AmqpBroker, topology: Topology, url: str) -> None:
    await broker.declare(topology)  # the fixture declared it once already
    async with AmqpBroker(url) as other:
        await other.declare(topology)
    for queue in topology.queue_names():
        assert await depth(url, queue) == 0


async def test_declared_bindings_route_each_lane_to_its_queue(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await broker.publish([send(topology, lane=Lane.SERVICE)] * 2
                         + [send(topology, lane=Lane.PROMOTIONAL)] * 3)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 2
    assert await depth(url, topology.send_queue(Lane.PROMOTIONAL)) == 3


async def test_a_conflicting_queue_raises_topology_conflict(
    amqp_settings: Settings, topology: Topology, url: str
) -> None:
    clash = topology.send_queue(Lane.SERVICE)
    _blocking(url, lambda channel: channel.queue_declare(clash, durable=True))  # classic
    amqp = AmqpBroker(url)
    await amqp.connect()
    try:
        with pytest.raises(TopologyConflict) as caught:
            await asyncio.wait_for(amqp.declare(topology), TIMEOUT_S)
        assert clash in str(caught.value)
        assert "inequivalent arg" in str(caught.value)
    finally:
        await amqp.close()


async def test_a_conflicting_exchange_raises_topology_conflict(
    amqp_settings: Settings, topology: Topology, url: str
) -> None:
    _blocking(url, lambda channel: channel.exchange_declare(
        topology.send_exchange, "fanout", durable=True))
    amqp = AmqpBroker(url)
    await amqp.connect()
    try:
        with pytest.raises(TopologyConflict, match=topology.send_exchange):
            await asyncio.wait_for(amqp.declare(topology), TIMEOUT_S)
    finally:
        await amqp.close()


# -- publishing -----------------------------------------------------------------------------


async def test_publishing_nothing_returns_at_once(broker: AmqpBroker) -> None:
    await asyncio.wait_for(broker.publish([]), 1)


async def test_one_message_is_in_the_queue_when_publish_returns(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    message = send(topology, b'{"hello": "world"}', headers={HEADER_ATTEMPT: 2},
                   message_id="msg-1")
    await asyncio.wait_for(broker.publish([message]), TIMEOUT_S)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 1
    _method, properties, body = await get_one(url, topology.send_queue(Lane.SERVICE))
    assert body == b'{"hello": "world"}'
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2  # persistent
    assert properties.message_id == "msg-1"
    assert properties.headers[HEADER_ATTEMPT] == 2


async def test_five_thousand_messages_are_in_the_queue_when_publish_returns(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await asyncio.wait_for(broker.publish(numbered(topology, 5000)), 60)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 5000


async def test_concurrent_publish_windows_all_resolve(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    sizes = [1, 250, 3, 1000, 17, 1, 500, 64, 2, 1200]
    batches, start = [], 0
    for size in sizes:
        batches.append(numbered(topology, size, start))
        start += size
    results = await asyncio.wait_for(
        asyncio.gather(*(broker.publish(b) for b in batches), return_exceptions=True), 60
    )
    assert results == [None] * len(sizes)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == sum(sizes)


async def test_an_unroutable_message_fails_its_publish(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    unroutable = Outgoing(topology.send_exchange, "no-such-lane", b"{}")
    with pytest.raises(PublishFailed, match="unroutable"):
        await asyncio.wait_for(broker.publish([unroutable]), TIMEOUT_S)
    # the broker stays usable
    await asyncio.wait_for(broker.publish([send(topology)]), TIMEOUT_S)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 1


async def test_one_unroutable_message_fails_the_whole_batch(
    broker: AmqpBroker, topology: Topology
) -> None:
    batch = [*numbered(topology, 5), Outgoing(topology.send_exchange, "no-such-lane", b"{}")]
    with pytest.raises(PublishFailed):
        await asyncio.wait_for(broker.publish(batch), TIMEOUT_S)


async def test_an_unroutable_message_does_not_fail_other_concurrent_publishes(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    # Both windows are pending when the broker returns the unroutable message. Failing the
    # routed batch too would make its caller publish it again: duplicates.
    unroutable = Outgoing(topology.send_exchange, "no-such-lane", b"{}")
    bad, good = await asyncio.wait_for(
        asyncio.gather(broker.publish([unroutable]), broker.publish(numbered(topology, 10)),
                       return_exceptions=True),
        TIMEOUT_S,
    )
    assert isinstance(bad, PublishFailed)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 10
    assert good is None


async def test_events_are_routed_to_the_events_queue(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    events = [
        ReceiptEvent(event_id=make_event_id("m", status), message_id="m", status=status,
                     occurred_at="2025-11-27T08:00:00Z")  # type: ignore[arg-type]
        for status in Status
    ]
    await broker.publish([event_message(topology, e) for e in events])
    assert await depth(url, topology.events_queue) == len(Status)


# -- consuming ------------------------------------------------------------------------------


async def test_consume_delivers_messages_with_their_properties(
    broker: AmqpBroker, topology: Topology
) -> None:
    await broker.publish([send(topology, b'{"n": 1}', headers={HEADER_ATTEMPT: 3},
                               message_id="msg-1")])
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    delivery = await inbox.next()
    assert delivery.body == b'{"n": 1}'
    assert delivery.headers == {HEADER_ATTEMPT: 3}
    assert delivery.message_id == "msg-1"
    assert delivery.routing_key == "service"
    assert delivery.exchange == topology.send_exchange
    assert delivery.queue == topology.send_queue(Lane.SERVICE)
    assert delivery.redelivered is False
    assert delivery.generation == broker.generation


async def test_acked_messages_are_gone(broker: AmqpBroker, topology: Topology, url: str) -> None:
    await broker.publish(numbered(topology, 3))
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    for delivery in await inbox.take(3):
        broker.ack(delivery)
    await broker.close()  # unacked messages would go back to the queue now
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 0


async def test_unacked_messages_return_to_the_queue_on_close(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await broker.publish(numbered(topology, 3))
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    await inbox.take(3)
    await broker.close()
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 3


async def test_ack_multiple_settles_every_earlier_delivery(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await broker.publish(numbered(topology, 5))
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    deliveries = await inbox.take(5)
    broker.ack(deliveries[3], multiple=True)
    await broker.close()
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 1


async def test_prefetch_limits_unacked_deliveries(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await broker.publish(numbered(topology, 5))
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 2, inbox)
    first = await inbox.take(2)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 3  # the rest stays ready
    assert inbox.queue.empty()
    broker.ack(first[0])
    third = await inbox.next()  # one more only after an ack
    assert third.body == b'{"n": 2}'


async def test_nack_with_requeue_redelivers(broker: AmqpBroker, topology: Topology) -> None:
    await broker.publish([send(topology, b'{"n": 7}')])
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    first = await inbox.next()
    assert first.redelivered is False
    broker.nack(first, requeue=True)
    again = await inbox.next()
    assert again.body == b'{"n": 7}'
    assert again.redelivered is True
    broker.ack(again)


async def test_nack_without_requeue_dead_letters_send_requests(
    broker: AmqpBroker, topology: Topology
) -> None:
    await broker.publish([send(topology, b'{"n": 8}')])
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    broker.nack(await inbox.next(), requeue=False)
    dead = Inbox()
    await broker.consume(topology.dead_queue, 10, dead)
    letter = await dead.next()
    assert letter.body == b'{"n": 8}'
    assert letter.headers["x-death"][0]["queue"] == topology.send_queue(Lane.SERVICE)


async def test_a_delay_queue_returns_the_message_to_its_lane_after_its_ttl(
    broker: AmqpBroker, topology: Topology
) -> None:
    tier = Topology.delay_tier(0)
    inbox = Inbox()
    await broker.consume(topology.send_queue(Lane.PROMOTIONAL), 10, inbox)
    await broker.publish([Outgoing(topology.retry_exchange,
                                   Topology.delay_routing_key(Lane.PROMOTIONAL, tier),
                                   b'{"retry": 1}', headers={HEADER_ATTEMPT: 2})])
    back = await inbox.next()
    assert back.body == b'{"retry": 1}'
    assert back.headers[HEADER_ATTEMPT] == 2
    assert back.headers["x-death"][0]["queue"] == topology.delay_queue(Lane.PROMOTIONAL, tier)


async def test_a_cancelled_consumer_receives_nothing_more(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    inbox = Inbox()
    consumer = await broker.consume(topology.send_queue(Lane.SERVICE), 10, inbox)
    await consumer.cancel()
    await broker.publish(numbered(topology, 2))
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 2
    assert inbox.queue.empty()


# -- generations: delivery tags die with their connection ----------------------------------


async def test_a_delivery_of_an_old_connection_is_ignored_by_a_new_one(
    amqp_settings: Settings, topology: Topology, url: str
) -> None:
    queue = topology.send_queue(Lane.SERVICE)
    async with AmqpBroker(url) as old:
        await old.declare(topology)
        await old.publish([send(topology, b'{"n": 1}')])
        inbox = Inbox()
        await old.consume(queue, 10, inbox)
        stale = await inbox.next()
    old.ack(stale)  # on a closed broker: nothing happens

    async with AmqpBroker(url) as new:
        assert new.generation != stale.generation
        inbox = Inbox()
        await new.consume(queue, 10, inbox)
        redelivered = await inbox.next()
        assert redelivered.redelivered is True
        assert redelivered.tag == stale.tag  # same number, different connection
        new.ack(stale)  # must not settle ``redelivered``
        new.nack(stale, requeue=False)
        assert new.is_open
    assert await depth(url, queue) == 1


async def test_reconnecting_voids_the_old_delivery_tags(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    queue = topology.send_queue(Lane.SERVICE)
    await broker.publish([send(topology, b'{"n": 1}')])
    inbox = Inbox()
    await broker.consume(queue, 10, inbox)
    stale = await inbox.next()
    await broker.close()

    await broker.connect()  # the same broker object, a new connection
    inbox = Inbox()
    await broker.consume(queue, 10, inbox)
    redelivered = await inbox.next()
    broker.ack(stale)  # a tag of the previous connection: must be ignored
    assert broker.is_open
    await broker.close()
    assert await depth(url, queue) == 1, "the stale ack settled the new delivery"
    assert redelivered.generation != stale.generation


async def test_publishing_works_after_reconnecting(
    broker: AmqpBroker, topology: Topology, url: str
) -> None:
    await broker.publish(numbered(topology, 3))
    await broker.close()
    await broker.connect()
    await asyncio.wait_for(broker.publish(numbered(topology, 2, start=3)), TIMEOUT_S)
    assert await depth(url, topology.send_queue(Lane.SERVICE)) == 5


# -- lost connections -----------------------------------------------------------------------


async def test_publishing_after_close_raises_connection_lost(
    broker: AmqpBroker, topology: Topology
) -> None:
    await broker.close()
    assert not broker.is_open
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(broker.publish([send(topology)]), TIMEOUT_S)


async def test_close_is_idempotent(broker: AmqpBroker) -> None:
    await broker.close()
    await asyncio.wait_for(broker.close(), TIMEOUT_S)
    assert broker.closed.done() and broker.closed.exception() is None


async def test_a_dropped_connection_fails_a_pending_publish_with_connection_lost(
    proxied_url: tuple[str, FaultyProxy], topology: Topology, amqp_settings: Settings
) -> None:
    url, proxy = proxied_url
    amqp = AmqpBroker(url)
    await amqp.connect()
    await amqp.declare(topology)
    proxy.freeze()  # no confirm can reach the client any more
    pending = asyncio.ensure_future(amqp.publish(numbered(topology, 100)))
    await asyncio.sleep(0)  # let publish() hand its messages to the connection
    assert not pending.done()

    proxy.cut()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(pending, TIMEOUT_S)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(asyncio.shield(amqp.closed), TIMEOUT_S)
    assert not amqp.is_open
    with pytest.raises(ConnectionLost):
        await amqp.publish([send(topology)])


async def test_close_after_a_dropped_connection_is_quiet(
    proxied_url: tuple[str, FaultyProxy], topology: Topology, amqp_settings: Settings
) -> None:
    # Services close their broker in ``finally`` / ``async with``: after a drop, close() must
    # not raise again and hide what really went wrong.
    url, proxy = proxied_url
    amqp = AmqpBroker(url)
    await amqp.connect()
    proxy.cut()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(asyncio.shield(amqp.closed), TIMEOUT_S)
    await asyncio.wait_for(amqp.close(), TIMEOUT_S)


async def test_close_under_a_pending_publish_never_hangs(
    broker: AmqpBroker, topology: Topology
) -> None:
    pending = asyncio.ensure_future(broker.publish(numbered(topology, 2000)))
    await asyncio.sleep(0)
    await asyncio.wait_for(broker.close(), TIMEOUT_S)
    done, _ = await asyncio.wait([pending], timeout=TIMEOUT_S)
    assert done, "publish still pending after close()"
    error = pending.exception()
    assert error is None or isinstance(error, ConnectionLost)


# -- opening a broker -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_open_broker_connects(amqp_settings: Settings) -> None:
    amqp = await asyncio.wait_for(open_broker(amqp_settings, name="test"), TIMEOUT_S)
    try:
        assert amqp.is_open
    finally:
        await amqp.close()


async def test_an_unreachable_broker_raises_connection_lost_within_the_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(broker_url=f"amqp://guest:hunter2-secret@127.0.0.1:{_free_port()}/",
                        connect_retry_s=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionLost) as caught:
        await asyncio.wait_for(open_broker(settings, name="test"), TIMEOUT_S)
    elapsed = loop.time() - started
    assert elapsed < 1.0 + 2.0  # the budget, plus one connection attempt
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "guest:***@127.0.0.1" in message
    assert "unreachable" in message
    captured = capsys.readouterr()
    assert "hunter2-secret" not in captured.out + captured.err


async def test_the_repr_of_a_broker_hides_the_password(broker: AmqpBroker, url: str) -> None:
    password = urlsplit(url).password
    assert password
    assert f":{password}@" not in repr(broker)
    assert "open" in repr(broker)
