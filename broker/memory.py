"""The embedded broker (``memory://``): RabbitMQ's semantics in one process.

It gives the services what they rely on, through the same :class:`~ics_sms.broker.base.Broker`
interface as RabbitMQ: publishes are confirmed once routed (unroutable ones fail),
deliveries stay unacked until acked, a closed connection returns its unacked messages
(``redelivered``), ``nack(requeue=True)`` redelivers, queues with ``x-message-ttl``
dead-letter expired messages (our delay queues), ``x-delivery-limit`` dead-letters a
message that keeps coming back, and topic exchanges route with ``*`` and ``#``.

Nothing is persisted: it is for ``ics-sms demo``, local development and unit tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ics_sms.broker.base import (
    Broker,
    ConnectionLost,
    Consumer,
    Delivery,
    OnDelivery,
    Outgoing,
    PublishFailed,
    TopologyConflict,
)
from ics_sms.schemas.topology import ExchangeType, Topology

__all__ = ["MemoryBroker", "MemoryHub", "hub_for", "topic_matches"]

_generations = itertools.count(1_000_000)


@dataclass(slots=True)
class _Message:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    redelivered: bool = False
    deliveries: int = 0


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


class _Queue:
    def __init__(self, hub: MemoryHub, name: str, arguments: dict[str, Any]) -> None:
        self.hub = hub
        self.name = name
        self.arguments = arguments
        self.ready: deque[_Message] = deque()
        self.consumers: list[_MemoryConsumer] = []
        self._turn = 0
        ttl = arguments.get("x-message-ttl")
        self.ttl_s = ttl / 1000 if isinstance(ttl, int) else None
        limit = arguments.get("x-delivery-limit")
        self.delivery_limit = limit if isinstance(limit, int) else None

    def put(self, message: _Message, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(message)
        else:
            self.ready.append(message)
        if self.ttl_s is not None:
            asyncio.get_running_loop().call_later(self.ttl_s, self._expire, message)
        self.dispatch()

    def _expire(self, message: _Message) -> None:
        try:
            self.ready.remove(message)
        except ValueError:
            return  # consumed meanwhile
        self.hub.dead_letter(self, message, "expired")

    def dispatch(self) -> None:
        while self.ready and self.consumers:
            consumer = self._next_consumer()
            if consumer is None:
                return
            consumer.deliver(self.ready.popleft())

    def _next_consumer(self) -> _MemoryConsumer | None:
        for _ in range(len(self.consumers)):
            self._turn = (self._turn + 1) % len(self.consumers)
            candidate = self.consumers[self._turn]
            if candidate.has_capacity():
                return candidate
        return None

    def returned(self, message: _Message) -> None:
        """An unacked message comes back (nack with requeue, or its connection closed)."""
        message.redelivered = True
        if self.delivery_limit is not None and message.deliveries > self.delivery_limit:
            self.hub.dead_letter(self, message, "delivery_limit")
            return
        self.put(message, front=True)


class MemoryHub:
    """The in-process "server" shared by every :class:`MemoryBroker` of one URL."""

    def __init__(self) -> None:
        self.exchanges: dict[str, ExchangeType] = {}
        self.queues: dict[str, _Queue] = {}
        self.bindings: dict[str, list[tuple[str, _Queue]]] = {}

    def __repr__(self) -> str:
        depth = sum(len(q.ready) for q in self.queues.values())
        return (f"<MemoryHub exchanges={len(self.exchanges)} queues={len(self.queues)} "
                f"ready={depth}>")

    def declare(self, topology: Topology) -> None:
        for exchange in topology.exchanges():
            known = self.exchanges.setdefault(exchange.name, exchange.type)
            if known is not exchange.type:
                raise TopologyConflict(f"exchange {exchange.name!r} exists as {known.value}")
        for queue in topology.queues():
            existing = self.queues.get(queue.name)
            if existing is None:
                self.queues[queue.name] = _Queue(self, queue.name, dict(queue.arguments))
            elif existing.arguments != queue.arguments:
                raise TopologyConflict(f"queue {queue.name!r} exists with other arguments")
        for binding in topology.bindings():
            targets = self.bindings.setdefault(binding.exchange, [])
            entry = (binding.routing_key, self.queues[binding.queue])
            if entry not in targets:
                targets.append(entry)

    def route(self, exchange: str, routing_key: str) -> list[_Queue]:
        kind = self.exchanges.get(exchange)
        if kind is None:
            raise PublishFailed(f"no exchange {exchange!r}")
        targets = self.bindings.get(exchange, [])
        if kind is ExchangeType.FANOUT:
            return [queue for _, queue in targets]
        if kind is ExchangeType.DIRECT:
            return [queue for key, queue in targets if key == routing_key]
        return [queue for key, queue in targets if topic_matches(key, routing_key)]

    def publish(self, message: Outgoing) -> None:
        """Route ``message`` (confirmed when this returns); unroutable raises."""
        queues = self.route(message.exchange, message.routing_key)
        if not queues:
            raise PublishFailed(f"unroutable: exchange {message.exchange!r} routing key "
                                f"{message.routing_key!r}")
        for queue in queues:
            queue.put(_Message(message.exchange, message.routing_key, message.body,
                               dict(message.headers or {}), message.message_id))

    def dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if not isinstance(exchange, str):
            return  # like RabbitMQ: without a dead-letter exchange the message is dropped
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        headers = dict(message.headers)
        death = {"count": 1, "reason": reason, "queue": queue.name, "time": datetime.now(UTC),
                 "exchange": message.exchange, "routing-keys": [message.routing_key]}
        headers["x-death"] = [death, *headers.get("x-death", [])]
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        try:
            self.publish(Outgoing(exchange, routing_key, message.body, headers,
                                  message.message_id))
        except PublishFailed:
            return  # RabbitMQ drops unroutable dead letters too

    def remove_queue(self, name: str) -> None:
        queue = self.queues.pop(name, None)
        for targets in self.bindings.values():
            targets[:] = [(key, q) for key, q in targets if q is not queue]

    def depth(self, queue: str) -> int:
        return len(self.queues[queue].ready)

    def unacked(self) -> int:
        return sum(len(c.unacked) for q in self.queues.values() for c in q.consumers)


_hubs: dict[str, MemoryHub] = {}


def hub_for(url: str) -> MemoryHub:
    """The hub of ``url`` (``memory://`` or ``memory://name``), created on first use."""
    return _hubs.setdefault(url.rstrip("/"), MemoryHub())


class _MemoryConsumer(Consumer):
    def __init__(self, broker: MemoryBroker, queue: _Queue, prefetch: int,
                 on_delivery: OnDelivery) -> None:
        self.broker = broker
        self.queue = queue
        self.prefetch = prefetch
        self.on_delivery = on_delivery
        self.unacked: dict[int, _Message] = {}

    def has_capacity(self) -> bool:
        return len(self.unacked) < self.prefetch

    def deliver(self, message: _Message) -> None:
        tag = self.broker.next_tag()
        message.deliveries += 1
        self.unacked[tag] = message
        self.broker.owner[tag] = self
        delivery = Delivery(
            body=message.body, exchange=message.exchange, routing_key=message.routing_key,
            tag=tag, redelivered=message.redelivered, generation=self.broker.generation,
            queue=self.queue.name, headers=dict(message.headers), message_id=message.message_id,
        )
        asyncio.get_running_loop().call_soon(self.on_delivery, delivery)

    def detach(self) -> None:
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)

    async def cancel(self) -> None:
        self.detach()

    def settle(self, tag: int, requeue: bool | None) -> None:
        """Ack (``requeue`` None), nack-drop (False) or nack-requeue (True) one tag."""
        message = self.unacked.pop(tag)
        self.broker.owner.pop(tag, None)
        if requeue:
            self.queue.returned(message)
        elif requeue is False:
            self.queue.hub.dead_letter(self.queue, message, "rejected")
        self.queue.dispatch()


class MemoryBroker(Broker):
    """A connection to a :class:`MemoryHub`."""

    def __init__(self, url: str = "memory://") -> None:
        self.hub = hub_for(url)
        self.generation = next(_generations)
        self._closed: asyncio.Future[None] | None = None
        self._tags = itertools.count(1)
        self._consumers: list[_MemoryConsumer] = []
        self._tails: list[str] = []
        self.owner: dict[int, _MemoryConsumer] = {}

    def __repr__(self) -> str:
        return f"<MemoryBroker gen={self.generation} unacked={len(self.owner)}>"

    def next_tag(self) -> int:
        return next(self._tags)

    @property
    def closed(self) -> asyncio.Future[None]:
        if self._closed is None:
            raise RuntimeError("broker is not connected")
        return self._closed

    async def connect(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()

    async def close(self) -> None:
        self._shutdown(None)

    def crash(self) -> None:
        """Drop the connection as a network failure would (tests, chaos)."""
        self._shutdown(ConnectionLost("memory connection dropped"))

    def _shutdown(self, error: ConnectionLost | None) -> None:
        if self._closed is None or self._closed.done():
            return
        for consumer in self._consumers:
            consumer.detach()
        for tag in sorted(self.owner, reverse=True):  # back to the front, in order
            consumer = self.owner[tag]
            consumer.settle(tag, requeue=True)
        for name in self._tails:  # exclusive queues go with their connection
            self.hub.remove_queue(name)
        if error is None:
            self._closed.set_result(None)
        else:
            self._closed.set_exception(error)
            self._closed.exception()

    def _check_open(self) -> None:
        if self._closed is None or self._closed.done():
            raise ConnectionLost("memory broker connection is closed")

    async def declare(self, topology: Topology) -> None:
        self._check_open()
        self.hub.declare(topology)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self._check_open()
        failed = None
        for message in messages:
            try:
                self.hub.publish(message)
            except PublishFailed as exc:
                failed = exc
        if failed is not None:
            raise failed

    async def declare_tail_queue(self, exchange: str, routing_keys: Sequence[str]) -> str:
        self._check_open()
        name = f"tail.{self.generation}.{len(self._tails)}"
        self._tails.append(name)
        queue = self.hub.queues[name] = _Queue(self.hub, name, {})
        targets = self.hub.bindings.setdefault(exchange, [])
        targets.extend((key, queue) for key in routing_keys)
        return name

    async def queue_depth(self, queue: str) -> int:
        return self.hub.depth(queue)

    async def consume(self, queue: str, prefetch: int, on_delivery: OnDelivery) -> Consumer:
        self._check_open()
        target = self.hub.queues.get(queue)
        if target is None:
            raise ConnectionLost(f"NOT_FOUND - no queue {queue!r}")
        consumer = _MemoryConsumer(self, target, prefetch, on_delivery)
        self._consumers.append(consumer)
        target.consumers.append(consumer)
        target.dispatch()
        return consumer

    def _settle(self, delivery: Delivery, requeue: bool | None, multiple: bool) -> None:
        if delivery.generation != self.generation or delivery.tag not in self.owner:
            return
        tags = [t for t in self.owner if t <= delivery.tag] if multiple else [delivery.tag]
        for tag in sorted(tags):
            self.owner[tag].settle(tag, requeue)

    def ack(self, delivery: Delivery, *, multiple: bool = False) -> None:
        self._settle(delivery, None, multiple)

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self._settle(delivery, requeue, False)
