"""Worker heartbeats in Redis: which workers are alive, and how ICS answers them.

Every worker writes, every :data:`BEAT_S` seconds, one Redis hash
``ics-sms:{namespace}hb:{host}:{pid}`` that expires after :data:`TTL_S`: its lanes,
whether it is consuming, and the ICS requests it made in the last minute with how many
of them failed (an HTTP status other than 200, or no answer), read from its own
``ics_sms_ics_requests`` counter. The console reads them all (:func:`read_heartbeats`):
a worker whose hash has expired is not alive. Nothing is written on ``memory://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ics_sms.schemas.settings import Settings
from ics_sms.workers.metrics import ICS_REQUESTS

__all__ = ["BEAT_S", "TTL_S", "Heartbeat", "beating", "ics_request_totals", "read_heartbeats"]

BEAT_S = 5.0
TTL_S = 20
WINDOW_S = 60.0
"""The ICS error rate a heartbeat reports covers this much time."""

log = structlog.get_logger(__name__)


def _prefix(settings: Settings) -> str:
    return f"ics-sms:{settings.namespace}hb:"


def ics_request_totals() -> tuple[int, int]:
    """(requests, failed requests) to ICS made by this process so far."""
    total = failed = 0
    for metric in ICS_REQUESTS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            total += int(sample.value)
            if sample.labels.get("code") != "200":
                failed += int(sample.value)
    return total, failed


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One live worker as its last heartbeat describes it."""

    worker: str
    lanes: str
    consuming: bool
    at: float
    ics_requests: int
    """ICS requests in the last minute."""
    ics_failed: int


class _Window:
    """(time, requests, failed) samples of the last :data:`WINDOW_S` seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, totals: tuple[int, int]) -> tuple[int, int]:
        self._samples.append((now, *totals))
        while len(self._samples) > 1 and self._samples[1][0] <= now - WINDOW_S:
            self._samples.popleft()
        _, first_total, first_failed = self._samples[0]
        return totals[0] - first_total, totals[1] - first_failed


@contextlib.asynccontextmanager
async def beating(settings: Settings, lanes: Iterable[str],
                  consuming: asyncio.Event) -> AsyncIterator[None]:
    """Write this worker's heartbeat while the block runs."""
    if settings.redis_url.startswith("memory:"):
        yield
        return
    client: Redis = Redis.from_url(settings.redis_url, socket_timeout=2,
                                   socket_connect_timeout=2)
    key = f"{_prefix(settings)}{socket.gethostname()}:{os.getpid()}"
    beat = _Beat(client, key, ",".join(lanes), consuming)
    await beat.write()  # alive from the start
    task = asyncio.create_task(beat.forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):
            await client.delete(key)
        await client.aclose()


class _Beat:
    """Writes one worker's heartbeat; logs a failing Redis once until it works again."""

    def __init__(self, client: Redis, key: str, lanes: str, consuming: asyncio.Event) -> None:
        self.client = client
        self.key = key
        self.lanes = lanes
        self.consuming = consuming
        self.window = _Window()
        self.failing = False

    def __repr__(self) -> str:
        return f"<_Beat {self.key} failing={self.failing}>"

    async def write(self) -> None:
        requests, failed = self.window.add(time.monotonic(), ics_request_totals())
        fields: list[str | int | float] = [
            "lanes", self.lanes, "consuming", int(self.consuming.is_set()), "at", time.time(),
            "ics_requests", requests, "ics_failed", failed]
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, items=fields)
                pipe.expire(self.key, TTL_S)
                await pipe.execute()
            self.failing = False
        except (RedisError, OSError) as exc:
            if not self.failing:
                log.warning("cannot write the worker heartbeat", error=str(exc))
            self.failing = True

    async def forever(self) -> None:
        while True:
            await asyncio.sleep(BEAT_S)
            await self.write()


async def read_heartbeats(settings: Settings) -> list[Heartbeat]:
    """The heartbeats of the live workers of this namespace (none on ``memory://``)."""
    if settings.redis_url.startswith("memory:"):
        return []
    client: Redis = Redis.from_url(settings.redis_url, socket_timeout=2,
                                   socket_connect_timeout=2, decode_responses=True)
    prefix = _prefix(settings)
    beats = []
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            row = await client.hgetall(key)
            if not row:
                continue
            beats.append(Heartbeat(
                worker=str(key)[len(prefix):], lanes=str(row.get("lanes", "")),
                consuming=row.get("consuming") == "1", at=float(row.get("at", 0)),
                ics_requests=int(row.get("ics_requests", 0)),
                ics_failed=int(row.get("ics_failed", 0))))
    finally:
        await client.aclose()
    return sorted(beats, key=lambda b: b.worker)
