"""A pika asyncio connection that sends the frames of one event-loop turn in one write.

pika hands every frame to its transport on its own, and the transport sends each with a
``send()`` of its own: three system calls per published message (method, header, body),
which costs more CPU than the rest of publishing. :class:`CoalescingConnection` gathers the
frames a turn of the event loop produces and gives them to the transport joined, up to
:data:`MAX_WRITE_BYTES` at a time. It is a subclass used only where this project creates
it: pika itself, and every other pika connection in the process, stay as they are.

It relies on two pika internals (``tests/broker/test_transport.py`` fails loudly when
either changes): every outgoing frame passes through ``BaseConnection._adapter_emit_data``,
and the connected transport is ``BaseConnection._transport``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection

__all__ = ["MAX_WRITE_BYTES", "CoalescingConnection"]

MAX_WRITE_BYTES = 1 << 20
"""Frames are joined into writes of about this size at most (a larger frame goes alone)."""


class CoalescingConnection(AsyncioConnection):  # type: ignore[misc]  # pika is untyped
    """An :class:`~pika.adapters.asyncio_connection.AsyncioConnection` (same constructor)
    whose outgoing frames are joined into one transport write per event-loop turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self.transport_writes = 0
        """Writes handed to the transport (compare with pika's ``frames_sent``)."""
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        """pika's hook for every outgoing frame: buffer it, write later in this turn."""
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        if self._outbox_bytes >= MAX_WRITE_BYTES:
            self._flush()
        elif self._flush_handle is None:
            loop: asyncio.AbstractEventLoop = self.ioloop
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._outbox:
            return
        data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        transport = self._transport
        if transport is None:
            return  # the stream is gone: pika drops what it had not sent, and so do we
        transport.write(data)
        self.transport_writes += 1
