"""How our messages become broker messages: one place for routing keys and encoding."""

from __future__ import annotations

from typing import Any

import orjson

from ics_sms.broker.base import Outgoing
from ics_sms.schemas.messages import SCHEMA_VERSION, ReceiptEvent, SendRequest, Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import Topology

__all__ = ["event_message", "event_message_from_fields", "send_message"]


def event_message(topology: Topology, event: ReceiptEvent) -> Outgoing:
    """A receipt event for the ``sms.events`` exchange, routed by ``sms.<status>``."""
    return Outgoing(
        exchange=topology.events_exchange,
        routing_key=event.status.routing_key,
        body=event.model_dump_json(exclude_none=True).encode(),
        message_id=event.event_id,
    )


def event_message_from_fields(topology: Topology, status: Status,
                              fields: dict[str, Any]) -> Outgoing:
    """The fast path of :func:`event_message` for services that emit many events.

    ``fields`` are ReceiptEvent fields whose values are already valid (taken from a
    validated SendRequest and our own enums); None values are left out, as above. The
    output is held to the ReceiptEvent model by tests.
    """
    body = orjson.dumps({"schema_version": SCHEMA_VERSION, "status": status,
                         **{k: v for k, v in fields.items() if v is not None}},
                        option=orjson.OPT_UTC_Z)
    return Outgoing(exchange=topology.events_exchange, routing_key=status.routing_key,
                    body=body, message_id=fields["event_id"])


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
