"""From ICS receipt bodies to receipt events: pure functions, no I/O.

Two forms arrive on a sender's tracking URL (see ICS_API.md, Receipts):

* a JSON array of event groups ``{"event": ..., "data": [{"ts", "meta", ...}]}``;
* an operator-style receipt (GET query or form POST: ``smsgid``, ``status``, ``err``, ``ts``).

Parsing splits a body into verified :class:`Receipt` objects, records that produce no event
on purpose (``replied`` groups, intermediate operator statuses ``ACCEPTD``/``ENROUTE``:
they count as *processed*, since there is nothing for ICS to send again) and records that
are refused, each with a reason (they are listed as *unprocessed*). A body that cannot be
read at all raises :class:`BodyError`.

Every record's ``meta``/``smsgid`` must carry a valid MAC; otherwise it is refused with
reason ``invalid smsgid``. Event ids are stable: the same receipt twice gives the same id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.ics import (
    FAILURE_CODES,
    OPERATOR_STATUS_MAP,
    OperatorReceipt,
    ReceiptData,
    receipt_groups,
)
from ics_sms.schemas.messages import ReceiptEvent, Status, make_event_id
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import MessageContext

__all__ = [
    "IGNORED_EVENTS",
    "INVALID_SMSGID",
    "BodyError",
    "ParsedReceipts",
    "Receipt",
    "parse_groups",
    "parse_operator",
    "to_event",
]

GROUP_STATUS: dict[str, Status] = {
    "delivered": Status.DELIVERED,
    "failed": Status.FAILED,
    "clicked": Status.CLICKED,
}
"""JSON event group names that become events."""

IGNORED_EVENTS = frozenset({"replied"})
"""JSON event groups we accept without publishing anything."""

INVALID_SMSGID = "invalid smsgid"

_MAX_ECHO_CHARS = 200
_records: TypeAdapter[list[ReceiptData]] = TypeAdapter(list[ReceiptData])


class BodyError(ValueError):
    """The request body cannot be used at all (answered with 400 and this reason)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """One verified receipt of one of our messages, before enrichment."""

    message_id: str
    status: Status
    occurred_at: datetime
    ts: int | None = None
    error_code: str | None = None
    error: str | None = None
    url: str | None = None

    @property
    def event_id(self) -> str:
        """Same receipt, same id: message, status and what tells two receipts apart."""
        return make_event_id(self.message_id, self.status, self.ts or "",
                             self.error_code or "", self.url or "")


@dataclass(slots=True)
class ParsedReceipts:
    """A body split into receipts, records accepted without an event, and refusals."""

    receipts: list[Receipt] = field(default_factory=list)
    ignored: int = 0
    unprocessed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return len(self.receipts) + self.ignored

    def refuse(self, reason: str, meta: str | None = None, **where: Any) -> None:
        """List a record as unprocessed: where it was, its smsgid if known, and why."""
        entry: dict[str, Any] = dict(where)
        if meta is not None:
            entry["meta"] = meta[:_MAX_ECHO_CHARS]
        entry["reason"] = reason
        self.unprocessed.append(entry)

    def answer(self) -> dict[str, Any]:
        """The JSON answer ICS gets for this body."""
        if not self.unprocessed:
            status = "success"
        elif self.processed:
            status = "partial"
        else:
            status = "fail"
        return {"status": status, "processed": self.processed, "unprocessed": self.unprocessed}


def _meta_of(record: object) -> str | None:
    meta = record.get("meta") if isinstance(record, dict) else None
    return meta if isinstance(meta, str) else None


def _occurred_at(ts: int) -> datetime:
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"ts {ts} is out of range") from None


# -- JSON event groups -------------------------------------------------------------------


def parse_groups(body: bytes, signer: SmsgidSigner) -> ParsedReceipts:
    """Parse a JSON array of event groups (a single group object is tolerated)."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError("body is not valid JSON") from None
    if isinstance(raw, dict):
        raw = [raw]
    try:
        groups = receipt_groups.validate_python(raw)
    except ValidationError as exc:
        raise BodyError("expected a JSON array of event groups: " + describe(exc)[0]) from None
    parsed = ParsedReceipts()
    for number, group in enumerate(groups):
        kind = group.event.lower()
        if kind in IGNORED_EVENTS:
            parsed.ignored += len(group.data)
        elif kind in GROUP_STATUS:
            _parse_group(parsed, number, kind, group.data, signer)
        else:
            for index, record in enumerate(group.data):
                parsed.refuse(f"unknown event {group.event!r}", _meta_of(record),
                              group=number, event=group.event, index=index)
    return parsed


def _parse_group(parsed: ParsedReceipts, number: int, kind: str, data: list[object],
                 signer: SmsgidSigner) -> None:
    """Validate a group's records at once; one by one only when some are malformed."""
    try:
        records: list[ReceiptData | str] = list(_records.validate_python(data))
    except ValidationError:
        records = [_validate_one(record) for record in data]
    status = GROUP_STATUS[kind]
    for index, record in enumerate(records):
        if isinstance(record, str):
            parsed.refuse(record, _meta_of(data[index]), group=number, event=kind, index=index)
            continue
        try:
            parsed.receipts.append(_group_receipt(status, record, signer))
        except ValueError as exc:
            parsed.refuse(str(exc), record.meta, group=number, event=kind, index=index)


def _validate_one(record: object) -> ReceiptData | str:
    """The record, or the reason why it is malformed."""
    try:
        return ReceiptData.model_validate(record)
    except ValidationError as exc:
        return "; ".join(describe(exc))


def _group_receipt(status: Status, record: ReceiptData, signer: SmsgidSigner) -> Receipt:
    message_id = signer.verify(record.meta)
    if message_id is None:
        raise ValueError(INVALID_SMSGID)
    occurred_at = _occurred_at(record.ts)
    if status is Status.FAILED:
        if not record.code:
            raise ValueError("a failed receipt needs a code")
        error = record.description or FAILURE_CODES.get(record.code)
        return Receipt(message_id, status, occurred_at, record.ts,
                       error_code=record.code, error=error)
    if status is Status.CLICKED:
        url = record.url or record.short_url
        if not url:
            raise ValueError("a clicked receipt needs a url")
        return Receipt(message_id, status, occurred_at, record.ts, url=url)
    return Receipt(message_id, status, occurred_at, record.ts)


# -- operator-style receipts -------------------------------------------------------------


def parse_operator(params: Mapping[str, str], signer: SmsgidSigner,
                   received_at: datetime) -> ParsedReceipts:
    """Parse one operator-style receipt; ``received_at`` stands in for a missing ``ts``."""
    fields = dict(params)
    if "status" in fields:
        fields["status"] = fields["status"].strip().upper()
    try:
        record = OperatorReceipt.model_validate(fields)
    except ValidationError as exc:
        raise BodyError("operator receipt: " + "; ".join(describe(exc))) from None
    parsed = ParsedReceipts()
    message_id = signer.verify(record.smsgid)
    mapped = OPERATOR_STATUS_MAP[record.status]
    if message_id is None:
        parsed.refuse(INVALID_SMSGID, record.smsgid)
    elif mapped is None:
        parsed.ignored += 1
    else:
        try:
            occurred_at = received_at if record.ts is None else _occurred_at(record.ts)
        except ValueError as exc:
            parsed.refuse(str(exc), record.smsgid)
            return parsed
        status = Status(mapped)
        failure = status is not Status.DELIVERED
        parsed.receipts.append(Receipt(
            message_id, status, occurred_at, record.ts,
            error_code=record.err if failure else None,
            error=record.status.value if failure else None,
        ))
    return parsed


# -- enrichment ---------------------------------------------------------------------------


def to_event(receipt: Receipt, sender: str, context: MessageContext | None) -> ReceiptEvent:
    """The event of ``receipt``, completed with the message context when there is one."""
    return ReceiptEvent(
        event_id=receipt.event_id,
        message_id=receipt.message_id,
        campaign_id=context.campaign_id if context else None,
        status=receipt.status,
        occurred_at=receipt.occurred_at,
        sender=sender,
        error_code=receipt.error_code,
        error=receipt.error,
        url=receipt.url,
        segments=context.segments if context else None,
        encoding=context.encoding if context else None,
        metadata=context.metadata if context else {},
    )
