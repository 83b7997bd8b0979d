"""Bare pika (asyncio adapter) below the :class:`~ics_sms.broker.base.Broker` interface.

The benchmark needs two things the interface does not offer: a queue's consumer count
(to know when worker processes are attached) and the bare loops that measure the limits
(the relay included). They all connect with :data:`CONNECTION`, the services' transport
(write coalescing), so the limits are those of the same client the services use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from ics_sms.broker.transport import CoalescingConnection

__all__ = ["CONNECTION", "PikaLink", "call", "open_channel"]

CONNECTION: type[AsyncioConnection] = CoalescingConnection
"""The one place that chooses the pika connection class of the bench."""

_RPC_TIMEOUT_S = 30.0


async def call(start: Callable[[Callable[[Any], None]], None],
               timeout_s: float = _RPC_TIMEOUT_S) -> Any:
    """Run a pika operation that reports through a callback; return what it reported."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(result: Any = None) -> None:
        if not future.done():
            future.set_result(result)

    start(done)
    async with asyncio.timeout(timeout_s):
        return await future


async def open_channel(connection: AsyncioConnection) -> Channel:
    """A new channel on ``connection``."""
    channel: Channel = await call(lambda done: connection.channel(on_open_callback=done))
    return channel


class PikaLink:
    """One pika connection and one channel on the running loop."""

    def __init__(self, connection: AsyncioConnection, channel: Channel) -> None:
        self.connection = connection
        self.channel = channel

    def __repr__(self) -> str:
        return f"<PikaLink open={self.connection.is_open} channel={self.channel.channel_number}>"

    @classmethod
    async def open(cls, url: str, name: str) -> PikaLink:
        params = pika.URLParameters(url)
        params.client_properties = {"connection_name": name}
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()

        def on_error(_connection: AsyncioConnection, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(ConnectionError(f"cannot connect: {exc!r}"))

        CONNECTION(params, on_open_callback=opened.set_result,
                   on_open_error_callback=on_error, custom_ioloop=loop)
        async with asyncio.timeout(_RPC_TIMEOUT_S):
            connection = await opened
        return cls(connection, await open_channel(connection))

    @property
    def server_version(self) -> str:
        properties: dict[str, Any] = getattr(self.connection, "server_properties", None) or {}
        version = properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)

    async def counts(self, queue: str) -> tuple[int, int]:
        """Messages ready in ``queue`` and consumers attached to it (passive declare)."""
        frame = await call(lambda done: self.channel.queue_declare(queue, passive=True,
                                                                   callback=done))
        return int(frame.method.message_count), int(frame.method.consumer_count)

    async def close(self) -> None:
        if self.connection.is_closed or self.connection.is_closing:
            return
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(*_args: object) -> None:
            if not closed.done():
                closed.set_result(None)

        self.connection.add_on_close_callback(on_close)
        self.connection.close()
        async with asyncio.timeout(_RPC_TIMEOUT_S):
            await closed
