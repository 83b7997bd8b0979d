"""Publishing with confirms, shared by concurrent requests (group commit).

Every receipt request waits until the broker confirmed its events. Instead of one confirm
window per request, requests queue their messages and one flusher publishes everything
queued as a single window whenever a window slot is free: under load many requests ride
on one confirm, while a lone request waits no longer than one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from ics_sms.broker.base import BrokerError, ConnectionLost, Outgoing
from ics_sms.callbacks.connection import BrokerConnection

__all__ = ["ConfirmingPublisher", "PublishDeadlineExceeded"]

log = structlog.get_logger(__name__)


class PublishDeadlineExceeded(BrokerError):
    """The messages were not confirmed within the request's deadline (queued or in flight);
    they may or may not be stored."""


@dataclass(slots=True)
class _Waiting:
    """One request's messages and the future its handler awaits."""

    messages: Sequence[Outgoing]
    future: asyncio.Future[None]


def _settle(items: list[_Waiting], error: BaseException | None) -> None:
    for item in items:
        if item.future.done():
            continue  # the request gave up already
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)


class ConfirmingPublisher:
    """Publishes the messages of many requests in shared confirm windows."""

    def __init__(self, connection: BrokerConnection, *, timeout_s: float = 10.0,
                 max_windows: int = 2, max_window_messages: int = 10_000) -> None:
        self._connection = connection
        self._timeout_s = timeout_s
        self._max_window_messages = max_window_messages
        self._slots = asyncio.Semaphore(max_windows)
        self._waiting: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._windows: set[asyncio.Task[None]] = set()
        self.published = 0
        self.failed = 0

    def __repr__(self) -> str:
        return (f"<ConfirmingPublisher waiting={len(self._waiting)} windows={len(self._windows)} "
                f"published={self.published} failed={self.failed}>")

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="confirm-flusher")

    async def close(self) -> None:
        """Stop: windows in flight finish, requests still queued fail."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._windows:
            await asyncio.wait(self._windows)
        _settle(list(self._waiting), ConnectionLost("the receiver is shutting down"))
        self._waiting.clear()

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Return once the broker confirmed all ``messages``; raise BrokerError otherwise."""
        if not messages:
            return
        if self._flusher is None:
            raise ConnectionLost("the publisher is not running")
        if not self._connection.ready:
            raise ConnectionLost(f"broker unavailable: {self._connection.reason}")
        item = _Waiting(messages, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        self._wake.set()
        try:
            async with asyncio.timeout(self._timeout_s):
                await item.future
        except TimeoutError:
            raise PublishDeadlineExceeded(f"no confirm within {self._timeout_s:g}s") from None

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._slots.acquire()
                batch = self._take()
                if not batch:
                    self._slots.release()
                    break
                window = asyncio.create_task(self._send(batch))
                self._windows.add(window)
                window.add_done_callback(self._windows.discard)

    def _take(self) -> list[_Waiting]:
        """Everything queued, up to the window size, skipping requests that gave up."""
        batch: list[_Waiting] = []
        size = 0
        while self._waiting and size < self._max_window_messages:
            item = self._waiting.popleft()
            if not item.future.done():
                batch.append(item)
                size += len(item.messages)
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        messages = [message for item in batch for message in item.messages]
        try:
            broker = self._connection.broker
            if broker is None:
                raise ConnectionLost(f"broker unavailable: {self._connection.reason}")
            async with asyncio.timeout(self._timeout_s):
                await broker.publish(messages)
        except TimeoutError:
            self._fail(batch, messages,
                       PublishDeadlineExceeded(f"no confirm within {self._timeout_s:g}s"))
        except BrokerError as exc:
            self._fail(batch, messages, exc)
        except Exception as exc:  # a bug below us: the requests fail with 503, it is logged
            log.exception("publishing failed unexpectedly")
            self._fail(batch, messages, BrokerError(f"publish failed: {exc!r}"))
        else:
            self.published += len(messages)
            _settle(batch, None)
        finally:
            self._slots.release()

    def _fail(self, batch: list[_Waiting], messages: list[Outgoing], error: BrokerError) -> None:
        self.failed += len(messages)
        log.warning("publish not confirmed", messages=len(messages), requests=len(batch),
                    reason=str(error))
        _settle(batch, error)
