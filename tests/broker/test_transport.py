"""CoalescingConnection: our pika connections write a turn's frames at once, others don't.

The first test pins the pika internals the class relies on and fails with a message saying
what changed; the others check the behaviour on a real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pika
import pika.adapters.asyncio_connection
import pika.adapters.base_connection
import pika.adapters.utils.io_services_utils
import pika.channel
import pika.connection
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.spec import Basic, BasicProperties

import ics_sms.broker.amqp  # noqa: F401  (imported for the test: it must patch nothing)
from ics_sms.broker.amqp import AmqpBroker
from ics_sms.broker.transport import MAX_WRITE_BYTES, CoalescingConnection

TIMEOUT_S = 15.0
PIKA_CHANGED = ("pika changed an internal that ics_sms.broker.transport.CoalescingConnection "
                "relies on ({}). Review broker/transport.py against this pika before allowing "
                "it in pyproject.toml.")


def _params(method: Any) -> list[str]:
    return list(inspect.signature(method).parameters)


def test_the_pika_internals_coalescing_relies_on_are_still_there() -> None:
    emit = getattr(BaseConnection, "_adapter_emit_data", None)
    assert inspect.isfunction(emit) and _params(emit) == ["self", "data"], PIKA_CHANGED.format(
        "BaseConnection._adapter_emit_data(self, data) is gone or has another signature")
    output = inspect.getsource(pika.connection.Connection._output_marshaled_frames)
    assert "self._adapter_emit_data(" in output, PIKA_CHANGED.format(
        "Connection._output_marshaled_frames no longer hands frames to _adapter_emit_data")
    made = inspect.getsource(BaseConnection._proto_connection_made)
    assert "self._transport = transport" in made, PIKA_CHANGED.format(
        "BaseConnection._proto_connection_made no longer keeps the transport in _transport")
    assert isinstance(inspect.getattr_static(BaseConnection, "ioloop"), property), \
        PIKA_CHANGED.format("BaseConnection.ioloop is no longer a property")
    expected = ["self", "parameters", "on_open_callback", "on_open_error_callback",
                "on_close_callback", "custom_ioloop", "internal_connection_workflow"]
    assert _params(AsyncioConnection.__init__) == expected, PIKA_CHANGED.format(
        "AsyncioConnection's constructor has other parameters")
    ours = {"_outbox", "_outbox_bytes", "_flush_handle", "_flush", "transport_writes"}
    for cls in AsyncioConnection.__mro__:
        clash = ours & set(vars(cls))
        assert not clash, PIKA_CHANGED.format(f"{cls.__name__} now defines {sorted(clash)}")


PIKA_MODULES = [
    pika.adapters.asyncio_connection,
    pika.adapters.base_connection,
    pika.adapters.utils.io_services_utils,
    pika.channel,
    pika.connection,
]


def test_importing_the_broker_patches_no_pika_class() -> None:
    replaced = []
    for module in PIKA_MODULES:
        for cls in vars(module).values():
            if not (isinstance(cls, type) and cls.__module__ == module.__name__):
                continue
            for name, value in vars(cls).items():
                function = value.__func__ if isinstance(value, staticmethod | classmethod) \
                    else value
                if isinstance(function, types.FunctionType) \
                        and function.__module__ != module.__name__:
                    replaced.append(f"{cls.__name__}.{name} = {function.__module__}")
    assert not replaced, f"pika classes were patched in this process: {replaced}"


# -- on a real RabbitMQ --------------------------------------------------------------------
async def _open(cls: type[AsyncioConnection], url: str) -> tuple[Any, asyncio.Future[Any]]:
    """A connected ``cls`` and a future that resolves once it is closed."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[Any] = loop.create_future()
    closed: asyncio.Future[Any] = loop.create_future()
    cls(pika.URLParameters(url), on_open_callback=opened.set_result,
        on_open_error_callback=lambda _c, exc: opened.set_exception(exc),
        on_close_callback=lambda _c, reason: closed.set_result(reason), custom_ioloop=loop)
    return await asyncio.wait_for(opened, TIMEOUT_S), closed


async def _publisher(cls: type[AsyncioConnection], url: str) -> AsyncIterator[Publisher]:
    connection, closed = await _open(cls, url)
    publisher = Publisher(connection)
    try:
        await publisher.start()
        yield publisher
    finally:
        connection.close()
        await asyncio.wait_for(closed, TIMEOUT_S)


async def _call(start: Callable[[Callable[[Any], None]], None]) -> Any:
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    start(lambda result: done.done() or done.set_result(result))
    return await asyncio.wait_for(done, TIMEOUT_S)


class Publisher:
    """A confirm-mode channel on ``connection`` with a private queue to publish to."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.channel: Any = None
        self.queue = ""
        self.acked = 0
        self._all_acked = asyncio.Event()
        self._expected = 0

    async def start(self) -> None:
        self.channel = await _call(lambda done: self.connection.channel(on_open_callback=done))
        await _call(lambda done: self.channel.confirm_delivery(self._on_ack, callback=done))
        frame = await _call(lambda done: self.channel.queue_declare(
            "", exclusive=True, auto_delete=True, callback=done))
        self.queue = frame.method.queue

    def publish(self, count: int, body: bytes = b"{}") -> None:
        """Publish ``count`` messages in one go, without giving the loop a turn."""
        self._expected += count
        self._all_acked.clear()
        for _ in range(count):
            self.channel.basic_publish("", self.queue, body, BasicProperties(delivery_mode=1))

    def _on_ack(self, frame: Any) -> None:
        assert isinstance(frame.method, Basic.Ack)
        self.acked = frame.method.delivery_tag
        if self.acked >= self._expected:
            self._all_acked.set()

    async def confirmed(self) -> None:
        """Wait until the broker confirmed everything published."""
        await asyncio.wait_for(self._all_acked.wait(), TIMEOUT_S)

    async def depth(self) -> int:
        frame = await _call(lambda done: self.channel.queue_declare(
            self.queue, passive=True, callback=done))
        return int(frame.method.message_count)


@pytest.fixture
async def ours(rabbitmq_url: str) -> AsyncIterator[Publisher]:
    async for publisher in _publisher(CoalescingConnection, rabbitmq_url):
        yield publisher


@pytest.fixture
async def plain(rabbitmq_url: str) -> AsyncIterator[Publisher]:
    async for publisher in _publisher(AsyncioConnection, rabbitmq_url):
        yield publisher


async def test_a_burst_of_publishes_goes_out_in_one_write(ours: Publisher) -> None:
    connection = ours.connection
    frames, writes = connection.frames_sent, connection.transport_writes
    ours.publish(300)
    assert connection.frames_sent - frames == 900  # method, header and body per message
    assert connection.transport_writes == writes  # held until the turn ends
    await ours.confirmed()
    assert 1 <= connection.transport_writes - writes <= 2  # one write (and maybe a heartbeat)
    assert await ours.depth() == 300


async def test_large_bursts_are_written_in_pieces_of_about_a_mebibyte(ours: Publisher) -> None:
    writes = ours.connection.transport_writes
    ours.publish(3, body=b"x" * (MAX_WRITE_BYTES * 2 // 3))
    assert ours.connection.transport_writes - writes == 1  # the first two reached the limit
    await ours.confirmed()
    assert ours.connection.transport_writes - writes == 2
    assert await ours.depth() == 3


async def test_a_plain_pika_connection_in_the_same_process_writes_as_pika_does(
        ours: Publisher, plain: Publisher) -> None:
    assert type(plain.connection) is AsyncioConnection
    plain.publish(10)
    ours.publish(10)
    # pika's own path: every frame is in its transport's buffer at once; ours waits
    assert plain.connection._transport.get_write_buffer_size() > 0
    assert ours.connection._transport.get_write_buffer_size() == 0
    await plain.confirmed()
    await ours.confirmed()
    assert await plain.depth() == 10 and await ours.depth() == 10


async def test_amqp_broker_connects_with_a_coalescing_connection(rabbitmq_url: str) -> None:
    broker = AmqpBroker(rabbitmq_url, connection_name="test")
    await broker.connect()
    try:
        assert isinstance(broker._connection, CoalescingConnection)
    finally:
        await broker.close()
