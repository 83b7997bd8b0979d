"""What a worker publishes when it decides a message's fate: events and broker copies."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ics_sms.broker.base import Delivery, Outgoing
from ics_sms.broker.codec import event_message, event_message_from_fields
from ics_sms.schemas.messages import Encoding, ReceiptEvent, SendRequest, Status, make_event_id
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_PARKED,
    HEADER_REASON,
    HEADER_REFUSED_SINCE,
    Topology,
)

__all__ = ["HEADER_DEAD_AT", "HEADER_SOURCE_QUEUE", "Outcomes"]

HEADER_DEAD_AT = "x-ics-dead-at"
"""Epoch seconds when a worker dead-lettered the message (``ics-sms dead-letters`` ages)."""
HEADER_SOURCE_QUEUE = "x-ics-source-queue"


class Outcomes:
    """Builds the outgoing messages of every outcome, for one topology."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def event(self, request: SendRequest, status: Status, now: datetime, *,
              sender: str | None, attempt: int | None = None, error: str | None = None,
              error_code: str | None = None, provider_message_id: str | None = None,
              segments: int | None = None, encoding: Encoding | None = None,
              discriminator: str | None = None, final: bool | None = None) -> Outgoing:
        """An event of ``request``; ``final=False`` marks a final-looking status that is
        not the message's final (see :class:`ReceiptEvent`)."""
        if discriminator is None:
            discriminator = provider_message_id or error_code or ""
        return event_message_from_fields(self.topology, status, {
            "event_id": make_event_id(request.message_id, status, discriminator),
            "message_id": request.message_id, "campaign_id": request.campaign_id,
            "occurred_at": now, "sender": sender, "provider_message_id": provider_message_id,
            "error_code": error_code, "error": error, "attempt": attempt,
            "segments": segments, "encoding": encoding, "metadata": request.metadata,
            "final": final,
        })

    def orphan_event(self, message_id: str, status: Status, now: datetime, error: str,
                     campaign_id: str | None = None, *, error_code: str | None = None,
                     discriminator: str = "unparseable", final: bool | None = None) -> Outgoing:
        """An event for a message that could not be parsed (only its id is known)."""
        event = ReceiptEvent(
            event_id=make_event_id(message_id, status, discriminator), message_id=message_id,
            campaign_id=campaign_id, status=status, occurred_at=now, error=error,
            error_code=error_code, final=final,
        )
        return event_message(self.topology, event)

    def dead_copy(self, delivery: Delivery, reason: str, error: str) -> Outgoing:
        headers: dict[str, Any] = dict(delivery.headers)
        headers.update({HEADER_REASON: reason, HEADER_ERROR: error[:500],
                        HEADER_SOURCE_QUEUE: delivery.queue, HEADER_DEAD_AT: int(time.time())})
        return Outgoing(self.topology.dead_exchange, delivery.routing_key, delivery.body,
                        headers=headers, message_id=delivery.message_id)

    def retry_copy(self, delivery: Delivery, lane: Lane, delay_s: float, *, attempt: int,
                   reason: str, parked: int | None = None,
                   refused_since: int | None = None) -> Outgoing:
        """The message again, through the delay tier for ``delay_s``, as ``attempt``."""
        headers: dict[str, Any] = {
            k: v for k, v in delivery.headers.items() if not k.startswith("x-death")
            and not k.startswith("x-first-death") and k != "x-delivery-count"
        }
        headers[HEADER_ATTEMPT] = attempt
        headers[HEADER_REASON] = reason[:500]
        if parked is not None:
            headers[HEADER_PARKED] = parked
        if refused_since is not None:
            headers[HEADER_REFUSED_SINCE] = refused_since
        tier = self.topology.delay_tier(delay_s)
        return Outgoing(self.topology.retry_exchange, self.topology.delay_routing_key(lane, tier),
                        delivery.body, headers=headers, message_id=delivery.message_id)

    def lane_move(self, delivery: Delivery, lane: Lane) -> Outgoing:
        return Outgoing(self.topology.send_exchange, self.topology.send_routing_key(lane),
                        delivery.body, headers=dict(delivery.headers) or None,
                        message_id=delivery.message_id)
