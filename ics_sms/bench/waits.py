"""Waiting on conditions with a deadline, giving up early when a child process died."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from ics_sms.bench.amqp import PikaLink

__all__ = ["Crashed", "StageFailed", "wait_consumers", "wait_http_ok", "wait_until"]

Crashed = Callable[[], str | None]
"""Why a child process the stage needs is gone, or None while all run."""

_POLL_S = 0.02


class StageFailed(Exception):
    """A stage run cannot go on: a timeout or a child that died; the message says which."""


def _nobody() -> str | None:
    return None


async def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str,
                     crashed: Crashed = _nobody, poll_s: float = _POLL_S) -> None:
    """Return once ``check()`` holds; raise :class:`StageFailed` on timeout or a crash."""
    deadline = time.monotonic() + timeout_s
    while not check():
        problem = crashed()
        if problem is not None:
            raise StageFailed(f"while waiting for {what}: {problem}")
        if time.monotonic() > deadline:
            raise StageFailed(f"{what}: not within {timeout_s:g}s")
        await asyncio.sleep(poll_s)


async def wait_http_ok(url: str, *, timeout_s: float, what: str,
                       crashed: Crashed = _nobody) -> None:
    """Return once ``GET url`` answers 200 (a service finished starting)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            problem = crashed()
            if problem is not None:
                raise StageFailed(f"{what} did not start: {problem}")
            if time.monotonic() > deadline:
                raise StageFailed(f"{what} not ready within {timeout_s:g}s")
            await asyncio.sleep(0.1)


async def wait_consumers(link: PikaLink, queue: str, count: int, *, timeout_s: float,
                         crashed: Crashed = _nobody) -> tuple[float, float]:
    """Wait until ``count`` consumers are attached to ``queue``.

    Returns the monotonic instants when the first and when the last one was seen (polled
    every few milliseconds): the first marks the end of process start-up.
    """
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    while True:
        _ready, consumers = await link.counts(queue)
        now = time.monotonic()
        if consumers and first is None:
            first = now
        if consumers >= count and first is not None:
            return first, now
        problem = crashed()
        if problem is not None:
            raise StageFailed(f"worker did not start: {problem}")
        if now > deadline:
            raise StageFailed(f"{consumers} of {count} workers attached within {timeout_s:g}s")
        await asyncio.sleep(0.005)
