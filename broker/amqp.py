"""RabbitMQ through pika's asyncio adapter: confirms in windows, manual acks, no blocking.

One connection per broker object (a :class:`~ics_sms.broker.transport.CoalescingConnection`)
with a channel in confirm mode for publishing and one channel per consumer. Each ``publish``
call is a window of delivery tags that waits for the broker's (multiple) acks together, so
many confirms are in flight at once; :class:`~ics_sms.broker.confirms.ConfirmTracker` counts
them. A lost connection fails every pending publish with :class:`ConnectionLost` and voids
the delivery tags of its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import structlog
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic, BasicProperties

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
from ics_sms.broker.confirms import ConfirmTracker
from ics_sms.broker.transport import CoalescingConnection
from ics_sms.schemas.settings import redact_url
from ics_sms.schemas.topology import Topology

__all__ = ["AmqpBroker"]

log = structlog.get_logger(__name__)

_generations = itertools.count(1)
_PRECONDITION_FAILED = 406


@dataclass(slots=True)
class _Window:
    """One ``publish`` call: its delivery tags and the future it awaits."""

    tags: range
    future: asyncio.Future[None]


class _AmqpConsumer(Consumer):
    def __init__(self, broker: AmqpBroker, channel: Channel, tag: str) -> None:
        self._broker = broker
        self._channel = channel
        self.tag = tag

    async def cancel(self) -> None:
        if not self._channel.is_open:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channel.basic_cancel(self.tag, callback=lambda _frame: _resolve(done))
        await self._broker._rpc(done)


def _resolve(future: asyncio.Future[Any], value: Any = None) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class AmqpBroker(Broker):
    """A :class:`Broker` on RabbitMQ."""

    def __init__(self, url: str, *, connection_name: str = "ics-sms") -> None:
        self._url = url
        self._params = pika.URLParameters(url)
        self._params.client_properties = {"connection_name": connection_name}
        self._connection: CoalescingConnection | None = None
        self._closed: asyncio.Future[None] | None = None
        self._rpc_waiters: set[asyncio.Future[Any]] = set()
        self._reset()

    def _reset(self) -> None:
        """Fresh state for a (re)connection: new delivery tags, new confirm numbering."""
        self._publisher: Channel | None = None
        self._consumers: dict[int, Channel] = {}
        self._windows: deque[_Window] = deque()
        self._confirms: ConfirmTracker[Outgoing] = ConfirmTracker()
        self.generation = next(_generations)

    def __repr__(self) -> str:
        state = "open" if self._closed is not None and not self._closed.done() else "closed"
        return (f"<AmqpBroker {redact_url(self._url)} {state} gen={self.generation} "
                f"published={self._confirms.next_tag - 1} unconfirmed={len(self._confirms)} "
                f"windows={len(self._windows)}>")

    # -- connection lifecycle ----------------------------------------------------------
    @property
    def closed(self) -> asyncio.Future[None]:
        if self._closed is None:
            raise RuntimeError("broker is not connected")
        return self._closed

    async def connect(self) -> None:
        if self._closed is not None and not self._closed.done():
            raise RuntimeError("already connected")
        self._reset()
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[CoalescingConnection] = loop.create_future()
        self._closed = loop.create_future()

        def on_open(connection: CoalescingConnection) -> None:
            _resolve(opened, connection)

        def on_open_error(_connection: CoalescingConnection, exc: BaseException) -> None:
            reason = str(exc) or f"{type(exc).__name__}{exc.args!r}"
            _fail(opened, ConnectionLost(f"cannot connect to {redact_url(self._url)}: {reason}"))

        self._connection = CoalescingConnection(
            self._params, on_open_callback=on_open, on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed, custom_ioloop=loop,
        )
        await opened
        self._publisher = await self._open_channel()
        confirmed: asyncio.Future[None] = loop.create_future()
        self._publisher.confirm_delivery(self._on_confirm, callback=lambda _f: _resolve(confirmed))
        self._publisher.add_on_return_callback(self._on_return)
        await self._rpc(confirmed)

    async def _open_channel(self) -> Channel:
        assert self._connection is not None
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        self._connection.channel(on_open_callback=lambda ch: _resolve(opened, ch))
        channel = await self._rpc(opened)
        channel.add_on_close_callback(self._on_channel_closed)
        return channel

    async def close(self) -> None:
        connection = self._connection
        if connection is None or self._closed is None:
            return
        if not (connection.is_closed or connection.is_closing):
            connection.close()
        with contextlib.suppress(ConnectionLost):
            await asyncio.shield(self._closed)

    def _on_connection_closed(self, _connection: CoalescingConnection,
                              reason: BaseException) -> None:
        error = ConnectionLost(f"connection to {redact_url(self._url)} closed: {reason}")
        self._fail_everything(error)
        if self._closed is not None and not self._closed.done():
            if isinstance(reason, pika.exceptions.ConnectionClosedByClient):
                self._closed.set_result(None)
            else:
                self._closed.set_exception(error)
                self._closed.exception()  # mark retrieved: the owner may be shutting down

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        if (isinstance(reason, ChannelClosedByBroker) and reason.reply_code == _PRECONDITION_FAILED
                and "inequivalent" in reason.reply_text):
            error: Exception = TopologyConflict(reason.reply_text)
        else:
            error = ConnectionLost(f"channel {channel.channel_number} closed: {reason}")
        self._fail_everything(error)
        connection = self._connection
        if connection is not None and not (connection.is_closed or connection.is_closing):
            connection.close(reply_text="channel lost")

    def _fail_everything(self, error: Exception) -> None:
        while self._windows:
            _fail(self._windows.popleft().future, error)
        for waiter in list(self._rpc_waiters):
            _fail(waiter, error)

    async def _rpc(self, future: asyncio.Future[Any]) -> Any:
        """Await a callback-completed future, failing it if the connection drops first."""
        self._rpc_waiters.add(future)
        try:
            return await future
        finally:
            self._rpc_waiters.discard(future)

    # -- topology ------------------------------------------------------------------------
    async def declare(self, topology: Topology) -> None:
        channel = self._publisher
        assert channel is not None
        loop = asyncio.get_running_loop()
        for exchange in topology.exchanges():
            done: asyncio.Future[None] = loop.create_future()
            channel.exchange_declare(exchange.name, exchange.type.value, durable=exchange.durable,
                                     callback=lambda _f, d=done: _resolve(d))
            await self._rpc(done)
        for queue in topology.queues():
            done = loop.create_future()
            channel.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments,
                                  callback=lambda _f, d=done: _resolve(d))
            await self._rpc(done)
        for binding in topology.bindings():
            done = loop.create_future()
            channel.queue_bind(binding.queue, binding.exchange, binding.routing_key,
                               callback=lambda _f, d=done: _resolve(d))
            await self._rpc(done)

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (passive declare)."""
        channel = self._publisher
        assert channel is not None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        channel.queue_declare(queue, passive=True,
                              callback=lambda f: _resolve(done, f.method.message_count))
        result: int = await self._rpc(done)
        return result

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        channel = self._publisher
        if channel is None or not channel.is_open:
            raise ConnectionLost("publisher channel is not open")
        written = 0
        try:
            for message in messages:
                properties = BasicProperties(
                    content_type="application/json", delivery_mode=2,
                    headers=message.headers, message_id=message.message_id,
                )
                channel.basic_publish(message.exchange, message.routing_key, message.body,
                                      properties, mandatory=True)
                written += 1
        except pika.exceptions.AMQPError as exc:
            self._confirms.sent(messages[:written])  # they took delivery tags
            raise ConnectionLost(f"publish failed: {exc!r}") from None
        window = _Window(self._confirms.sent(messages),
                         asyncio.get_running_loop().create_future())
        self._windows.append(window)
        await window.future

    def _on_confirm(self, frame: Any) -> None:
        """Settle the windows the ack/nack completes (multiple, or single out of order)."""
        method = frame.method
        if isinstance(method, Basic.Nack):
            self._confirms.on_nack(method.delivery_tag, method.multiple)
        else:
            self._confirms.on_ack(method.delivery_tag, method.multiple)
        for window in [w for w in self._windows if self._confirms.is_settled(w.tags)]:
            self._windows.remove(window)
            failure = self._confirms.release(window.tags)
            if failure is None:
                _resolve(window.future)
            else:
                _fail(window.future, PublishFailed(failure))

    def _on_return(self, _channel: Channel, method: Basic.Return, props: BasicProperties,
                   _body: bytes) -> None:
        """Mark the returned message failed; its window fails once it is confirmed."""
        reason = (f"unroutable: exchange {method.exchange!r} routing key "
                  f"{method.routing_key!r} ({method.reply_text})")
        log.error("broker returned a message", reason=reason)
        self._confirms.on_return(props.message_id, method.routing_key, reason)

    # -- consuming -----------------------------------------------------------------------
    async def consume(self, queue: str, prefetch: int, on_delivery: OnDelivery) -> Consumer:
        """Consume on a channel of its own: a consumer's deliveries, acks and prefetch never
        queue behind another's (the service lane does not wait behind a backlog)."""
        channel = await self._open_channel()
        self._consumers[channel.channel_number] = channel
        loop = asyncio.get_running_loop()
        qos: asyncio.Future[None] = loop.create_future()
        channel.basic_qos(prefetch_count=prefetch, callback=lambda _f: _resolve(qos))
        await self._rpc(qos)
        generation = self.generation

        def on_message(_ch: Channel, method: Basic.Deliver, props: BasicProperties,
                       body: bytes) -> None:
            on_delivery(Delivery(
                body=body, exchange=method.exchange, routing_key=method.routing_key,
                tag=method.delivery_tag, redelivered=method.redelivered,
                generation=generation, queue=queue, headers=props.headers or {},
                message_id=props.message_id, channel=channel.channel_number,
            ))

        started: asyncio.Future[str] = loop.create_future()
        channel.basic_consume(queue, on_message,
                              callback=lambda f: _resolve(started, f.method.consumer_tag))
        tag = await self._rpc(started)
        return _AmqpConsumer(self, channel, tag)

    def _usable(self, delivery: Delivery) -> Channel | None:
        channel = self._consumers.get(delivery.channel)
        if delivery.generation != self.generation or channel is None or not channel.is_open:
            return None  # the broker already requeued it with the old connection
        return channel

    def ack(self, delivery: Delivery, *, multiple: bool = False) -> None:
        channel = self._usable(delivery)
        if channel is not None:
            channel.basic_ack(delivery.tag, multiple=multiple)

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        channel = self._usable(delivery)
        if channel is not None:
            channel.basic_nack(delivery.tag, requeue=requeue)

    # -- tailing (``ics-sms events``) ----------------------------------------------------
    async def declare_tail_queue(self, exchange: str, routing_keys: Sequence[str]) -> str:
        """Declare a server-named, exclusive, auto-delete queue bound to ``exchange`` once
        per routing key, and return its name. It lives only as long as this connection,
        so a tail never leaves a queue behind nor takes messages from a durable one."""
        channel = self._publisher
        assert channel is not None
        loop = asyncio.get_running_loop()
        declared: asyncio.Future[str] = loop.create_future()
        channel.queue_declare("", exclusive=True, auto_delete=True,
                              callback=lambda f: _resolve(declared, f.method.queue))
        queue: str = await self._rpc(declared)
        for key in routing_keys:
            bound: asyncio.Future[None] = loop.create_future()
            channel.queue_bind(queue, exchange, key, callback=lambda _f, b=bound: _resolve(b))
            await self._rpc(bound)
        return queue
