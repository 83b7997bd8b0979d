"""How our messages become broker messages: one place for routing keys and encoding."""

from __future__ import annotations

from typing import Any

from broker.base import Outgoing
from schemas.messages import ReceiptEvent, SendRequest
from schemas.senders import Lane
from schemas.topology import Topology

__all__ = ["event_message", "send_message"]


def event_message(topology: Topology, event: ReceiptEvent) -> Outgoing:
    """A receipt event for the ``sms.events`` exchange, routed by ``sms.<status>``."""
    return Outgoing(
        exchange=topology.events_exchange,
        routing_key=event.status.routing_key,
        body=event.model_dump_json(exclude_none=True).encode(),
        message_id=event.event_id,
    )


def send_message(
    topology: Topology, request: SendRequest, lane: Lane, headers: dict[str, Any] | None = None
) -> Outgoing:
    """A send request for the lane of its sender."""
    return Outgoing(
        exchange=topology.send_exchange,
        routing_key=topology.send_routing_key(lane),
        body=request.model_dump_json(exclude_none=True).encode(),
        headers=headers,
        message_id=request.message_id,
    )
