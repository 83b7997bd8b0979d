"""Open the broker named by the settings; the one loop that retries an unreachable broker.

Every service reaches the broker through :func:`connect_with_backoff`: the worker at start
and after a lost connection, the receiver's
:class:`~ics_sms.callbacks.connection.BrokerConnection`, and the command line tools
through :func:`open_broker`.

Several addresses (a RabbitMQ cluster, see
:func:`~ics_sms.schemas.settings.split_broker_url`): one attempt of :func:`connect_once`
tries them in the order given, from where this process last connected, until one answers;
only when every address failed does :func:`connect_with_backoff` wait. A process stays on
the address it reached; once that connection is lost (not closed by us), its next attempt
starts with the following address, so a dead node is tried last, not first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable
from typing import overload

import structlog

from ics_sms.backoff import backoff
from ics_sms.broker.amqp import AmqpBroker
from ics_sms.broker.base import Broker, ConnectionLost
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.settings import Settings, redact_url

__all__ = ["RECONNECT_BASE_S", "RECONNECT_CAP_S", "connect_once", "connect_with_backoff",
           "open_broker"]

log = structlog.get_logger(__name__)

RECONNECT_BASE_S = 0.2
"""The first wait after a failed connection attempt."""
RECONNECT_CAP_S = 5.0
"""The longest wait between two connection attempts."""


_first_address: dict[tuple[str, ...], int] = {}
"""Per list of addresses: the index this process tries first (where it last connected,
or the one after the address whose connection was lost)."""


async def connect_once(settings: Settings, *, name: str) -> Broker:
    """One attempt to connect to the settings' broker, trying each of its addresses in
    turn (see the module doc); raises :class:`ConnectionLost` naming every failure."""
    addresses = settings.broker_urls
    if addresses[0].startswith("memory:"):
        memory = MemoryBroker(addresses[0])
        await memory.connect()
        return memory
    count = len(addresses)
    first = _first_address.get(addresses, 0)
    failures: list[str] = []
    for step in range(count):
        index = (first + step) % count
        broker = AmqpBroker(addresses[index], connection_name=name)
        try:
            await broker.connect()
        except ConnectionLost as exc:  # its message holds the redacted address
            failures.append(str(exc))
            continue
        _first_address[addresses] = index
        broker.closed.add_done_callback(functools.partial(_on_closed, addresses, index))
        if failures:
            log.warning("broker address unreachable, connected to another",
                        broker=redact_url(addresses[index]), failed=failures)
        return broker
    if count == 1:
        raise ConnectionLost(failures[0])
    raise ConnectionLost(f"none of the {count} broker addresses answered: "
                         + "; ".join(failures))


def _on_closed(addresses: tuple[str, ...], index: int, closed: asyncio.Future[None]) -> None:
    """A lost connection (not one we closed) sends the next attempt to the next address."""
    lost = closed.cancelled() or closed.exception() is not None
    if lost and len(addresses) > 1 and _first_address.get(addresses) == index:
        _first_address[addresses] = (index + 1) % len(addresses)


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
