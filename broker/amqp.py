"""RabbitMQ through pika's asyncio adapter: confirms in windows, manual acks, no blocking.

One connection per broker object with two channels: one in confirm mode for publishing,
one for consuming. Batches of publishes wait for the broker's (multiple) acks together, so
many confirms are in flight at once. A lost connection fails every pending publish with
:class:`ConnectionLost` and voids the delivery tags of its generation.
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
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
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
from ics_sms.schemas.settings import redact_url
from ics_sms.schemas.topology import Topology

__all__ = ["AmqpBroker"]

log = structlog.get_logger(__name__)

_COALESCE_BYTES = 1 << 20


def _coalescing_produce(self: Any) -> None:
    """pika sends every frame with its own ``send()`` (three per message); join what is
    buffered (up to 1 MiB) into one write. Same contract as pika's ``_produce``."""
    buffers = self._tx_buffers
    while buffers:
        if len(buffers) > 1 and len(buffers[0]) < _COALESCE_BYTES:
            joined = [buffers.popleft()]
            size = len(joined[0])
            while buffers and size < _COALESCE_BYTES:
                size += len(buffers[0])
                joined.append(buffers.popleft())
            buffers.appendleft(b"".join(joined))
        sent = self._sigint_safe_send(self._sock, buffers[0])
        chunk = buffers.popleft()
        if sent < len(chunk):
            buffers.appendleft(chunk[sent:])
        self._tx_buffered_byte_count -= sent


_AsyncPlaintextTransport._produce = _coalescing_produce

_generations = itertools.count(1)
_PRECONDITION_FAILED = 406


@dataclass(slots=True)
class _Window:
    """Publishes awaiting confirmation, sequence numbers ``first..last``."""

    first: int
    last: int
    future: asyncio.Future[None]
    messages: Sequence[Outgoing]
    remaining: int = 0
    failed: str | None = None


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
        self._connection: AsyncioConnection | None = None
        self._closed: asyncio.Future[None] | None = None
        self._rpc_waiters: set[asyncio.Future[Any]] = set()
        self._reset()

    def _reset(self) -> None:
        """Fresh state for a (re)connection: new delivery tags, new confirm numbering."""
        self._publisher: Channel | None = None
        self._consumers: dict[int, Channel] = {}
        self._pending: deque[_Window] = deque()
        self._floor = 0
        self._singles: set[int] = set()
        self._returns: deque[str] = deque()
        self._published = 0
        self.generation = next(_generations)

    def __repr__(self) -> str:
        state = "open" if self._closed is not None and not self._closed.done() else "closed"
        return (f"<AmqpBroker {redact_url(self._url)} {state} gen={self.generation} "
                f"published={self._published} confirmed={self._floor} "
                f"windows={len(self._pending)}>")

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
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()
        self._closed = loop.create_future()

        def on_open(connection: AsyncioConnection) -> None:
            _resolve(opened, connection)

        def on_open_error(_connection: AsyncioConnection, exc: BaseException) -> None:
            reason = str(exc) or f"{type(exc).__name__}{exc.args!r}"
            _fail(opened, ConnectionLost(f"cannot connect to {redact_url(self._url)}: {reason}"))

        self._connection = AsyncioConnection(
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

    def _on_connection_closed(self, _connection: AsyncioConnection, reason: BaseException) -> None:
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
        while self._pending:
            _fail(self._pending.popleft().future, error)
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
        first = self._published + 1
        try:
            for message in messages:
                properties = BasicProperties(
                    content_type="application/json", delivery_mode=2,
                    headers=message.headers, message_id=message.message_id,
                )
                channel.basic_publish(message.exchange, message.routing_key, message.body,
                                      properties, mandatory=True)
                self._published += 1
        except pika.exceptions.AMQPError as exc:
            raise ConnectionLost(f"publish failed: {exc!r}") from None
        window = _Window(first, self._published, asyncio.get_running_loop().create_future(),
                         messages, remaining=self._published - first + 1)
        self._pending.append(window)
        await window.future

    def _on_confirm(self, frame: Any) -> None:
        """Count acks/nacks into windows; confirms may be multiple and arrive out of order."""
        method = frame.method
        failure = "broker refused (nack) a message" if isinstance(method, Basic.Nack) else None
        if self._returns:
            failure = self._returns.popleft()
        if method.multiple:
            self._confirm_range(method.delivery_tag or self._published, failure)
        else:
            self._confirm_one(method.delivery_tag, failure)
        if any(w.remaining == 0 for w in self._pending):
            for window in [w for w in self._pending if w.remaining == 0]:
                self._pending.remove(window)
                if window.failed:
                    _fail(window.future, PublishFailed(window.failed))
                else:
                    _resolve(window.future)

    def _confirm_range(self, upto: int, failure: str | None) -> None:
        lo = self._floor + 1
        for window in self._pending:
            if window.first > upto:
                break
            a, b = max(window.first, lo), min(window.last, upto)
            if a > b:
                continue
            already = sum(1 for tag in self._singles if a <= tag <= b)
            window.remaining -= b - a + 1 - already
            window.failed = window.failed or failure
        self._singles = {tag for tag in self._singles if tag > upto}
        self._floor = max(self._floor, upto)

    def _confirm_one(self, tag: int, failure: str | None) -> None:
        if tag <= self._floor or tag in self._singles:
            return
        self._singles.add(tag)
        for window in self._pending:
            if window.first <= tag <= window.last:
                window.remaining -= 1
                window.failed = window.failed or failure
                return

    def _on_return(self, _channel: Channel, method: Basic.Return, props: BasicProperties,
                   _body: bytes) -> None:
        """Fail the window that holds the returned message (matched by message id);
        when it cannot be told apart, every pending window (a retry beats a loss)."""
        reason = (f"unroutable: exchange {method.exchange!r} routing key "
                  f"{method.routing_key!r} ({method.reply_text})")
        log.error("broker returned a message", reason=reason)
        holders = [w for w in self._pending if props.message_id is not None and any(
            m.message_id == props.message_id and m.routing_key == method.routing_key
            for m in w.messages)]
        if len(holders) == 1:
            holders[0].failed = reason
        else:  # RabbitMQ acks a returned message right after returning it
            self._returns.append(reason)

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
