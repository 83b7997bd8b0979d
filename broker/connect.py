"""Open the broker named by the settings, retrying an unreachable one within a budget."""

from __future__ import annotations

import asyncio

import structlog

from ics_sms.broker.amqp import AmqpBroker
from ics_sms.broker.base import Broker, ConnectionLost
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.settings import Settings

__all__ = ["open_broker"]

log = structlog.get_logger(__name__)


async def open_broker(settings: Settings, *, name: str, retry_s: float | None = None) -> Broker:
    """A connected broker; raises :class:`ConnectionLost` once ``retry_s`` is spent."""
    url = settings.broker_url.get_secret_value()
    if url.startswith("memory:"):
        memory = MemoryBroker(url)
        await memory.connect()
        return memory
    budget = settings.connect_retry_s if retry_s is None else retry_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delay = 0.2
    while True:
        broker = AmqpBroker(url, connection_name=name)
        try:
            await broker.connect()
        except ConnectionLost as exc:
            if loop.time() + delay > deadline:
                raise ConnectionLost(
                    f"broker {settings.broker_url_redacted} unreachable after {budget:g}s: "
                    f"{exc}") from None
            log.warning("broker unreachable, retrying", broker=settings.broker_url_redacted,
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            return broker
