"""How our messages become broker messages: one place for routing keys and encoding."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson

from ics_sms.broker.base import Outgoing
from ics_sms.schemas.messages import SCHEMA_VERSION, ReceiptEvent, SendRequest, Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import HEADER_PUBLISH_ID, Topology

__all__ = ["event_message", "event_message_from_fields", "new_publish_id", "send_message"]

_PUBLISHER = secrets.token_hex(6)
_PUBLISHES = itertools.count(1)


def new_publish_id() -> str:
    """The ``x-ics-publish-id`` of one publish of a send request: a random part per
    process and a counter, so every publish has its own (a republish of the same request
    is told apart from a redelivery or a retry of the same publish, which keep it)."""
    return f"{_PUBLISHER}{next(_PUBLISHES):x}"


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
    topology: Topology, request: SendRequest, lane: Lane, headers: dict[str, Any] | None = None,
    publish_id: str | None = None,
) -> Outgoing:
    """A send request for the lane of its sender, as a new publish (``publish_id``: the
    id of the publish it repeats; a producer publishing again what the broker did not
    confirm reuses the message itself)."""
    return Outgoing(
        exchange=topology.send_exchange,
        routing_key=topology.send_routing_key(lane),
        body=request.model_dump_json(exclude_none=True).encode(),
        headers={**(headers or {}), HEADER_PUBLISH_ID: publish_id or new_publish_id()},
        message_id=request.message_id,
    )
