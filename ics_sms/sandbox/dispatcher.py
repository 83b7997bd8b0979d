"""Posting receipts to each request's ``dlrurl``, in batches, retried like ICS does.

A POST that fails with a connection error, a timeout, a 5xx or a 429 is retried with
backoff, so a receiver that is killed and restarted loses nothing; each receipt is given up
after ``receipt_max_attempts`` POSTs (counted in ``receipts_failed``). Other 4xx answers
are final (``receipts_rejected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from itertools import groupby
from operator import attrgetter

import aiohttp
import orjson
import structlog

from ics_sms.backoff import backoff
from ics_sms.sandbox.config import SandboxConfig
from ics_sms.sandbox.receipts import PendingReceipt, ReceiptQueue
from ics_sms.sandbox.stats import SandboxStats
from ics_sms.sandbox.wire import group_receipts

__all__ = ["ReceiptDispatcher"]

log = structlog.get_logger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}


class ReceiptDispatcher:
    """Owns the receipt queue, one ClientSession and the flusher task."""

    def __init__(
        self,
        config: SandboxConfig,
        stats: SandboxStats,
        rng: random.Random,
        paused: Callable[[], bool],
    ) -> None:
        self._config = config
        self._stats = stats
        self._rng = rng
        self._paused = paused
        self._queue = ReceiptQueue()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._settled = asyncio.Event()
        self._slots = asyncio.Semaphore(config.receipt_concurrency)
        self._posts: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (f"<ReceiptDispatcher waiting={len(self._queue)} in_flight={self._in_flight} "
                f"posts={len(self._posts)}>")

    @property
    def pending(self) -> int:
        """Receipts not yet posted successfully nor given up."""
        return len(self._queue) + self._in_flight

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.receipt_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, headers=_JSON_HEADERS)
        self._flusher = asyncio.create_task(self._flush_forever(), name="sandbox-receipts")
        self._flusher.add_done_callback(_report_crash)

    async def close(self) -> None:
        """Stop posting: cancel and await every task, close the session."""
        dropped = self.pending
        tasks = [*self._posts, *([self._flusher] if self._flusher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.clear()
        if dropped:
            log.warning("sandbox.receipts_dropped_at_shutdown", receipts=dropped)
        if self._session is not None:
            await self._session.close()

    async def wait_idle(self) -> None:
        """Return when no receipt is pending."""
        await self._idle.wait()

    async def wait_settled(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` is true, checking it again after every receipt POST."""
        while True:
            self._settled.clear()
            if done():
                return
            await self._settled.wait()

    # -- scheduling ----------------------------------------------------------------------
    def schedule(self, receipts: list[tuple[float, PendingReceipt]]) -> None:
        """Queue ``(delay_s, receipt)`` pairs: each is posted once its delay has passed."""
        if not receipts:
            return
        self._stats.receipts_scheduled += len(receipts)
        self._push(receipts)

    def wake(self) -> None:
        """Look at the queue again now (e.g. after receipts were un-paused)."""
        self._wake.set()

    def _push(self, receipts: list[tuple[float, PendingReceipt]]) -> None:
        now = asyncio.get_running_loop().time()
        self._idle.clear()
        first = False
        for delay_s, receipt in receipts:
            first |= self._queue.push(now + delay_s, receipt)
        if first:
            self._wake.set()

    # -- the flusher ---------------------------------------------------------------------
    async def _flush_forever(self) -> None:
        flush_s = self._config.receipt_flush_ms / 1000
        while True:
            await self._until_due()
            self._dispatch(self._queue.pop_due(asyncio.get_running_loop().time()))
            await asyncio.sleep(flush_s)  # let the next batch gather

    async def _until_due(self) -> None:
        """Return once the first queued receipt is due and receipts are not paused."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            due = self._queue.next_due()
            if due is not None and not self._paused():
                if due <= loop.time():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - loop.time())
            else:
                await self._wake.wait()

    def _dispatch(self, receipts: list[PendingReceipt]) -> None:
        size = self._config.receipt_batch_size
        receipts.sort(key=attrgetter("url"))
        for url, group in groupby(receipts, key=attrgetter("url")):
            batch = list(group)
            for start in range(0, len(batch), size):
                self._spawn(url, batch[start : start + size])

    def _spawn(self, url: str, batch: list[PendingReceipt]) -> None:
        self._in_flight += len(batch)
        task = asyncio.create_task(self._post(url, batch))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)
        task.add_done_callback(_report_crash)

    # -- posting -------------------------------------------------------------------------
    async def _post(self, url: str, batch: list[PendingReceipt]) -> None:
        try:
            async with self._slots:
                status = await self._send(url, batch)
            self._settle(url, batch, status)
        finally:
            self._in_flight -= len(batch)
            self._check_idle()

    async def _send(self, url: str, batch: list[PendingReceipt]) -> int | str:
        """The HTTP status of the POST, or the name of the error that prevented it."""
        assert self._session is not None, "start() was not awaited"
        body = orjson.dumps(group_receipts((r.event, r.data) for r in batch))
        try:
            async with self._session.post(url, data=body) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    def _settle(self, url: str, batch: list[PendingReceipt], status: int | str) -> None:
        self._settled.set()
        self._stats.receipt_posts += 1
        if isinstance(status, int) and status < 300:
            self._stats.receipts_posted.update(r.event for r in batch)
        elif isinstance(status, str) or status >= 500 or status == 429:
            self._retry(url, batch, status)
        else:
            self._stats.receipts_rejected += len(batch)
            log.warning("sandbox.receipts_rejected", url=url, status=status, receipts=len(batch))

    def _retry(self, url: str, batch: list[PendingReceipt], status: int | str) -> None:
        config = self._config
        again: list[tuple[float, PendingReceipt]] = []
        for receipt in batch:
            receipt.attempts += 1
            if receipt.attempts < config.receipt_max_attempts:
                delay = backoff(receipt.attempts, base_s=config.receipt_retry_base_ms / 1000,
                                cap_s=config.receipt_retry_cap_ms / 1000, rng=self._rng)
                again.append((delay, receipt))
        given_up = len(batch) - len(again)
        self._stats.receipts_retried += len(again)
        self._stats.receipts_failed += given_up
        if again:
            self._push(again)
        log.warning("sandbox.receipt_post_failed", url=url, status=status,
                    receipts=len(batch), given_up=given_up)

    def _check_idle(self) -> None:
        if not self._queue and not self._in_flight:
            self._idle.set()


def _report_crash(task: asyncio.Task[None]) -> None:
    """Log a background task that died of an unexpected error (a bug), with its traceback."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("sandbox.task_crashed", task=task.get_name(), exc_info=error)
