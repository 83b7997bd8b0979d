"""The benchmark's senders and send requests (plain dicts, as a campaign engine hands them)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from pydantic import SecretStr

from ics_sms.broker.codec import send_message
from ics_sms.demo.campaign import TEMPLATE_ID
from ics_sms.sandbox import ALWAYS_DELIVERED, NEVER_RECEIPTED
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane, Sender, Senders, SenderType
from ics_sms.schemas.topology import Topology

__all__ = [
    "DELIVERED",
    "NO_RECEIPT",
    "PROMOTIONAL",
    "SERVICE",
    "bench_senders",
    "message_id",
    "requests",
    "sample_body",
]

SERVICE = "bench-otp"
PROMOTIONAL = "bench-offers"
NO_RECEIPT = f"+{NEVER_RECEIPTED}"
"""The sandbox accepts messages to this number and never posts a receipt."""
DELIVERED = f"+{ALWAYS_DELIVERED}"

_ENTITY = "1201159100000000000"
_MAX_RATE_PER_S = 100_000


def bench_senders() -> Senders:
    """A service and a promotional sender that ICS (the sandbox) never slows down."""
    service = Sender(name=SERVICE, type=SenderType.SERVICE_IMPLICIT, sender_id="BENCHS",
                     username="bench-otp", token=SecretStr(secrets.token_urlsafe(16)),
                     dlt_entity_id=_ENTITY, rate_per_s=_MAX_RATE_PER_S)
    offers = Sender(name=PROMOTIONAL, type=SenderType.PROMOTIONAL, sender_id="512345",
                    username="bench-offers", token=SecretStr(secrets.token_urlsafe(16)),
                    dlt_entity_id=_ENTITY, rate_per_s=_MAX_RATE_PER_S)
    return Senders().add(service).add(offers)


def message_id(tag: str, index: int) -> str:
    return f"{tag}-{index}"


def requests(tag: str, count: int, *, sender: str = SERVICE, to: str | None = None,
             start: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` OTP-sized send requests with ids ``<tag>-<n>``; ``to`` or varied mobiles."""
    for index in range(start, start + count):
        yield {
            "message_id": message_id(tag, index),
            "campaign_id": tag,
            "to": to or f"+9198{index % 100_000_000:08d}",
            "text": f"{index % 1_000_000:06d} is your ACME login code. Do not share it.",
            "sender": sender,
            "dlt_template_id": TEMPLATE_ID,
            "metadata": {"list": "bench"},
        }


def sample_body(topology: Topology) -> bytes:
    """The body of one send request exactly as the producer publishes it."""
    request = SendRequest.model_validate(next(requests("bench-sample", 1)))
    return send_message(topology, request, Lane.SERVICE).body
