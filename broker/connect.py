"""Open the broker named by the settings; the one loop that retries an unreachable broker.

Every service reaches the broker through :func:`connect_with_backoff`: the worker at start
and after a lost connection, the receiver's
:class:`~ics_sms.callbacks.connection.BrokerConnection`, and the command line tools
through :func:`open_broker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import overload

import structlog

from ics_sms.backoff import backoff
from ics_sms.broker.amqp import AmqpBroker
from ics_sms.broker.base import Broker, ConnectionLost
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.settings import Settings

__all__ = ["RECONNECT_BASE_S", "RECONNECT_CAP_S", "connect_once", "connect_with_backoff",
           "open_broker"]

log = structlog.get_logger(__name__)

RECONNECT_BASE_S = 0.2
"""The first wait after a failed connection attempt."""
RECONNECT_CAP_S = 5.0
"""The longest wait between two connection attempts."""


async def connect_once(settings: Settings, *, name: str) -> Broker:
    """One attempt to connect to the settings' broker; raises :class:`ConnectionLost`."""
    url = settings.broker_url.get_secret_value()
    broker: Broker = (MemoryBroker(url) if url.startswith("memory:")
                      else AmqpBroker(url, connection_name=name))
    await broker.connect()
    return broker


@overload
async def connect_with_backoff(
    attempt: Callable[[], Awaitable[Broker]], *, broker: str, retry_s: float | None = None,
    stop: None = None, retry_on: tuple[type[Exception], ...] = ...,
    base_s: float = ..., cap_s: float = ..., rng: random.Random | None = None,
) -> Broker: ...


@overload
async def connect_with_backoff(
    attempt: Callable[[], Awaitable[Broker]], *, broker: str, retry_s: float | None = None,
    stop: asyncio.Event, retry_on: tuple[type[Exception], ...] = ...,
    base_s: float = ..., cap_s: float = ..., rng: random.Random | None = None,
) -> Broker | None: ...


async def connect_with_backoff(
    attempt: Callable[[], Awaitable[Broker]], *, broker: str, retry_s: float | None = None,
    stop: asyncio.Event | None = None, retry_on: tuple[type[Exception], ...] = (ConnectionLost,),
    base_s: float = RECONNECT_BASE_S, cap_s: float = RECONNECT_CAP_S,
    rng: random.Random | None = None,
) -> Broker | None:
    """Call ``attempt`` until it returns a broker, waiting :func:`backoff` between tries.

    Each failure (an exception of ``retry_on``) is logged once, naming ``broker`` (the
    redacted URL). With ``retry_s`` set, raises :class:`ConnectionLost` once the next wait
    would end past that budget (0: a single attempt); without, tries until it succeeds.
    Returns None as soon as ``stop`` is set (only possible when ``stop`` is given).
    """
    loop = asyncio.get_running_loop()
    deadline = None if retry_s is None else loop.time() + retry_s
    failures = 0
    while stop is None or not stop.is_set():
        try:
            return await attempt()
        except retry_on as exc:
            failures += 1
            delay = backoff(failures, base_s=base_s, cap_s=cap_s, rng=rng)
            if deadline is not None and loop.time() + delay > deadline:
                raise ConnectionLost(
                    f"broker {broker} unreachable after {retry_s:g}s: {exc}") from None
            log.warning("broker unreachable, retrying", broker=broker, reason=str(exc),
                        failures=failures, retry_in_s=round(delay, 3))
            await _pause(delay, stop)
    return None


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def open_broker(settings: Settings, *, name: str, retry_s: float | None = None) -> Broker:
    """A connected broker; raises :class:`ConnectionLost` once ``retry_s`` is spent
    (by default ``Settings.connect_retry_s``)."""
    return await connect_with_backoff(
        lambda: connect_once(settings, name=name), broker=settings.broker_url_redacted,
        retry_s=settings.connect_retry_s if retry_s is None else retry_s)
