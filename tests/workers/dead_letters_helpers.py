"""Dead letters for tests: a broker with the topology declared, and dead letters written
the way a worker writes them (shared by the library's and the command's tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ics_sms.broker.base import Broker, Delivery
from ics_sms.broker.codec import send_message
from ics_sms.broker.connect import open_broker
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.workers.outcomes import Outcomes

__all__ = ["dead_letter", "declared_broker"]


@contextlib.asynccontextmanager
async def declared_broker(settings: Settings) -> AsyncIterator[Broker]:
    """A broker connection with ``settings``' topology declared."""
    opened = await open_broker(settings, name="test dead letters")
    try:
        await opened.declare(settings.topology)
        yield opened
    finally:
        await opened.close()


async def dead_letter(settings: Settings, broker: Broker, req: SendRequest, reason: str,
                      publish_id: str = "p-original") -> None:
    """A dead letter as a worker writes it (the same builder)."""
    sent = send_message(settings.topology, req, Lane.SERVICE, publish_id=publish_id)
    delivery = Delivery(sent.body, sent.exchange, sent.routing_key, 1, False, 0,
                        settings.topology.send_queue(Lane.SERVICE), dict(sent.headers or {}),
                        req.message_id)
    await broker.publish([Outcomes(settings.topology).dead_copy(delivery, reason, "why")])
