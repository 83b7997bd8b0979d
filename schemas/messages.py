"""The wire contract on RabbitMQ: what campaign engines publish and analytics reads.

Both messages are JSON (UTF-8) and carry ``schema_version``. Unknown fields are ignored so
that an older reader keeps working when a newer writer adds one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from ics_sms.schemas.phone import normalize_e164

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_KEYS",
    "MAX_TEXT_CHARS",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "Encoding",
    "Identifier",
    "ReceiptEvent",
    "SendRequest",
    "Status",
    "make_event_id",
]

SCHEMA_VERSION: Literal[1] = 1
MAX_TEXT_CHARS = 2000
MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 4096
"""Bound of ``metadata`` as compact JSON (UTF-8). It is copied into every event of the
message and kept in the context store until the last receipt: 4 KiB holds 50 short keys with
ids and labels, and keeps a million messages awaiting receipts within a few GiB of Redis."""

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"),
]
"""Ids that travel through ICS and URLs: letters, digits and ``._:-``, at most 64."""

DltId = Annotated[str, StringConstraints(pattern=r"^\d{1,30}$")]


class Status(StrEnum):
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CLICKED = "clicked"

    @property
    def routing_key(self) -> str:
        """Routing key of this status on the ``sms.events`` exchange."""
        return f"sms.{self.value}"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({Status.DELIVERED, Status.FAILED, Status.REJECTED, Status.EXPIRED})


class Encoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


def _e164(value: str) -> str:
    return normalize_e164(value)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only white space")
    return value


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class SendRequest(_Wire):
    """One SMS to send. ``message_id`` is the producer's idempotency key."""

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Version of this message format."
    )
    message_id: Identifier = Field(description="The producer's id; the idempotency key.")
    campaign_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    to: Annotated[str, AfterValidator(_e164)] = Field(
        description="Recipient in E.164, e.g. +919812345678.",
        json_schema_extra={"pattern": r"^\+?[0-9 ()\-.]{7,20}$"},
    )
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(_text)]
    sender: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Sender name; the default sender when absent."
    )
    dlt_template_id: DltId | None = Field(
        default=None, description="DLT template id, required for +91 recipients."
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="After this instant the message is not sent (status expired)."
    )
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict,
        description=f"Opaque; echoed in every event of this message. At most "
                    f"{MAX_METADATA_KEYS} keys and {MAX_METADATA_BYTES} bytes as compact JSON.",
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"may hold at most {MAX_METADATA_KEYS} keys")
        _check_integers(value)
        size = len(orjson.dumps(value))
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"is {size} bytes as JSON, more than {MAX_METADATA_BYTES}: it is copied into "
                f"every event of the message; keep ids there and look details up downstream"
            )
        return value

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class ReceiptEvent(_Wire):
    """What happened to one message. ``event_id`` is stable across duplicate receipts."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(description="Stable id: the same receipt twice gives the same id.")
    message_id: str
    campaign_id: str | None = Field(
        default=None, description="Absent only on receipts for messages the receiver cannot map."
    )
    status: Status
    occurred_at: AwareDatetime
    sender: str | None = None
    provider_message_id: str | None = Field(default=None, description="ICS message id (mid).")
    error_code: str | None = None
    error: str | None = None
    url: str | None = Field(default=None, description="The clicked URL (clicked events).")
    click_count: int | None = Field(
        default=None, ge=1, description="Clicks on this link so far (1: the first click)."
    )
    user_agent: str | None = Field(default=None, max_length=512)
    attempt: int | None = Field(default=None, ge=1)
    segments: int | None = Field(default=None, ge=1)
    encoding: Encoding | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    final: bool | None = Field(
        default=None,
        description="false on an event whose status looks final but is not this message's "
                    "final status (a receipt contradicting the first final, or a second "
                    "publication of the message_id refused as a duplicate); absent otherwise. "
                    "Count finals as terminal statuses without final=false: one per message.",
    )
    reason: str | None = Field(
        default=None,
        description="Why final is false, e.g. which final status the message has already.",
    )


_INT_RANGE = (-(2**63), 2**64 - 1)


def _check_integers(value: object) -> None:
    """Integers must fit 64 bits: every JSON encoder on the way must be able to write them."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise ValueError("numbers must fit in 64 bits")
    elif isinstance(value, dict):
        for item in value.values():
            _check_integers(item)
    elif isinstance(value, list):
        for item in value:
            _check_integers(item)


def make_event_id(message_id: str, status: Status | str, *discriminators: object) -> str:
    """A deterministic event id from what identifies one receipt of one message."""
    parts = [message_id, str(status), *(str(d) for d in discriminators)]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)
