"""From ICS receipt bodies to receipt events: pure functions, no I/O.

Two forms arrive on a sender's tracking URL (see ICS_API.md, Receipts):

* a JSON array of event groups ``{"event": ..., "data": [{"ts", "meta", ...}]}``;
* an operator-style receipt (GET query or form POST: ``smsgid``, ``status``, ``err``, ``ts``).

Parsing splits a body into verified :class:`Receipt` objects, records that produce no event
on purpose (``replied`` groups, intermediate operator statuses ``ACCEPTD``/``ENROUTE``:
they count as *processed*, since there is nothing for ICS to send again) and records that
are refused, each with a reason (they are listed as *unprocessed*). A body that cannot be
read at all raises :class:`BodyError`.

Receipts are bound to their message
    Every record's ``meta``/``smsgid`` must carry a MAC over the message id *and the sender
    of the tracking URL* (:class:`SmsgidCheck`); otherwise it is refused with reason
    ``invalid smsgid``, or ``smsgid of another sender`` when it is valid for another
    configured sender. :func:`bind` then checks what only the message context can tell:
    a ``clicked`` receipt's URL must be one of the links of the message, and a legacy
    smsgid (signed before sender binding, accepted for the transition) must belong to this
    sender. Refusals are per record: the good receipts of a request are still published.

Receipts are checked against their message's record
    :meth:`ReceiptService.bind <ics_sms.callbacks.service.ReceiptService.bind>` reads the
    records of a request's receipts in one round trip (state, ICS's ``mid``, the context
    the worker stored with its claim) and :func:`bind_found` adds the state to the checks
    above (:func:`state_refusal`; the same rule for delivery receipts and clicks):

    * ``sending``, ``submitted``, ``uncertain``: accepted, a delivery receipt is the
      message's final. It can overtake the worker's answer from ICS (``sending``: ICS
      answered slower than the handset) or stand in for a lost one (``uncertain``).
    * a final state: accepted. The transition tells a replay (same ``event_id``: the final
      again) from a contradiction, published with ``final: false`` and ``reason`` naming
      the final status the message has. A click proves the SMS reached a handset, so it
      is kept after ``failed`` or ``expired`` too; after ``rejected`` (ICS refused the
      message) it is kept as well: the message is never sent again, so refusing would
      hide the only sign that the rejection was misjudged.
    * ``pending``: refused, ``message not submitted`` (one of :data:`FORGERIES`: a request
      of nothing else is a 403; counted as ``not_submitted``). The worker released the
      claim because ICS certainly did not get the message, and will send it again: a
      receipt now is a replay or a forgery. Were the release misjudged, the next send
      carries the same smsgid and its receipts are accepted; the refused one only spoke
      of the duplicate SMS.
    * no record although the store answered: accepted. A record lives ``ttl_s`` (the
      dedupe window, and a day past the receipt deadline), longer than ICS reports, so a
      missing one means the store lost data (Redis restarted without persistence, keys
      evicted) far more likely than a forgery, which the smsgid's MAC already rules out.
      Refusing would lose a genuine receipt for good (ICS does not retry a 4xx); accepted,
      it ends the message (the transition creates a final record) and is counted in
      ``ics_sms_receipts_without_record``.
    * the message store unreachable: as before records existed: delivery receipts are
      published without the final-status check (logged); clicks and legacy smsgids, which
      need the context, are answered 503 when the context store cannot stand in.

    The context comes from the record; the context store is read (one more round trip)
    only for messages whose record has none (records of older workers, or created by a
    receipt).

Event ids
    ``event_id`` is unique per (message_id, status, occurrence) and the same for every
    replay of a receipt, whatever its ``ts``, ``code`` or ``description`` say:

    * ``delivered``, ``failed``, ``expired``: ``(message_id, status)``; a message has one
      such fact per status (a second ``failed`` with another code is the same fact told
      again; which final wins is the state store's business);
    * ``clicked`` (ICS click tracking): ``(message_id, status, link)`` with the link as
      :func:`~ics_sms.stores.context.link_key` spells it. ICS reports no click count, so
      repeated clicks on one link share the id: analytics sees unique clicks per link.
      (Self-tracked clicks, :mod:`ics_sms.callbacks.clicks`, count every click.)

    A forged replay with a new ``ts`` therefore cannot mint a new event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from ics_sms.stores.context import MessageContext, link_key
from ics_sms.stores.messages import State

__all__ = [
    "FORGERIES",
    "IGNORED_EVENTS",
    "INVALID_SMSGID",
    "NOT_SUBMITTED",
    "OTHER_SENDER",
    "UNBOUND_LEGACY",
    "UNKNOWN_LINKS",
    "URL_NOT_IN_MESSAGE",
    "BodyError",
    "Found",
    "ParsedReceipts",
    "Receipt",
    "SmsgidCheck",
    "bind",
    "bind_found",
    "event_fields",
    "parse_groups",
    "parse_operator",
    "state_refusal",
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
OTHER_SENDER = "smsgid of another sender"
URL_NOT_IN_MESSAGE = "clicked url is not a link of this message"
UNKNOWN_LINKS = "clicked url cannot be checked: the links of this message are unknown"
UNBOUND_LEGACY = "smsgid without sender binding and no record of its sender"
NOT_SUBMITTED = "message not submitted: its send was released, ICS did not get it"
FORGERIES = frozenset({INVALID_SMSGID, OTHER_SENDER, URL_NOT_IN_MESSAGE, NOT_SUBMITTED})
"""Refusals that a genuine receipt of a message ICS got never gets: forged, misdirected, or
replayed for a message whose record says ICS did not get it (answered 4xx when nothing
else in the request was accepted)."""

_MAX_ECHO_CHARS = 200
_records: TypeAdapter[list[ReceiptData]] = TypeAdapter(list[ReceiptData])


class BodyError(ValueError):
    """The request body cannot be used at all (answered with 400 and this reason)."""


@dataclass(frozen=True, slots=True)
class SmsgidCheck:
    """Checks smsgids arriving on the tracking URL of ``sender``.

    ``others`` are the other configured senders: an smsgid valid for one of them is refused
    as ``smsgid of another sender`` (a misdirected or cross-sender receipt) rather than as
    invalid. With ``accept_legacy`` an smsgid signed before sender binding is let through
    marked ``legacy``; :func:`bind` accepts it only if the message context names ``sender``.
    """

    signer: SmsgidSigner
    sender: str
    others: Sequence[str] = ()
    accept_legacy: bool = True

    def message_id(self, smsgid: str) -> tuple[str, bool]:
        """``(message_id, legacy)``; raises ``ValueError`` with the refusal reason."""
        message_id = self.signer.verify(smsgid, self.sender)
        if message_id is not None:
            return message_id, False
        if any(self.signer.verify(smsgid, other) is not None for other in self.others):
            raise ValueError(OTHER_SENDER)
        if self.accept_legacy:
            message_id = self.signer.verify_legacy(smsgid)
            if message_id is not None:
                return message_id, True
        raise ValueError(INVALID_SMSGID)


@dataclass(frozen=True, slots=True)
class Found:
    """What the stores know of one message, read once per receipt batch."""

    state: State | None = None
    """The record's state; None when there is no record or the store could not answer."""
    context: MessageContext | None = None
    """From the record, else from the context store (records of older workers)."""
    provider_message_id: str | None = None
    """ICS's message id as the worker recorded it."""


NOT_FOUND = Found()


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
    provider_message_id: str | None = None
    legacy: bool = False
    """Its smsgid predates sender binding: :func:`bind` must confirm the sender."""
    found: Found | None = field(default=None, compare=False)
    """What the stores knew of its message when :func:`bind_found` accepted it (None: not
    checked against its record yet)."""
    origin: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Where it was in the body (listed in ``unprocessed`` if :func:`bind` refuses it)."""

    @property
    def event_id(self) -> str:
        """Same fact, same id (see the module documentation): replays never mint one."""
        if self.status is Status.CLICKED:
            return make_event_id(self.message_id, self.status, link_key(self.url or ""))
        return make_event_id(self.message_id, self.status)

    @property
    def needs_context(self) -> bool:
        """Whether :func:`bind` needs the message context to accept it."""
        return self.legacy or self.status is Status.CLICKED


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


def parse_groups(body: bytes, check: SmsgidCheck) -> ParsedReceipts:
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
            _parse_group(parsed, number, kind, group.data, check)
        else:
            for index, record in enumerate(group.data):
                parsed.refuse(f"unknown event {group.event!r}", _meta_of(record),
                              group=number, event=group.event, index=index)
    return parsed


def _parse_group(parsed: ParsedReceipts, number: int, kind: str, data: list[object],
                 check: SmsgidCheck) -> None:
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
        origin = {"group": number, "event": kind, "index": index, "meta": record.meta}
        try:
            parsed.receipts.append(_group_receipt(status, record, check, origin))
        except ValueError as exc:
            parsed.refuse(str(exc), record.meta, group=number, event=kind, index=index)


def _validate_one(record: object) -> ReceiptData | str:
    """The record, or the reason why it is malformed."""
    try:
        return ReceiptData.model_validate(record)
    except ValidationError as exc:
        return "; ".join(describe(exc))


def _group_receipt(status: Status, record: ReceiptData, check: SmsgidCheck,
                   origin: Mapping[str, Any]) -> Receipt:
    message_id, legacy = check.message_id(record.meta)
    occurred_at = _occurred_at(record.ts)
    common: dict[str, Any] = {"provider_message_id": record.mid, "legacy": legacy,
                              "origin": origin}
    if status is Status.FAILED:
        if not record.code:
            raise ValueError("a failed receipt needs a code")
        error = record.description or FAILURE_CODES.get(record.code)
        return Receipt(message_id, status, occurred_at, record.ts,
                       error_code=record.code, error=error, **common)
    if status is Status.CLICKED:
        url = record.url or record.short_url
        if not url:
            raise ValueError("a clicked receipt needs a url")
        return Receipt(message_id, status, occurred_at, record.ts, url=url, **common)
    return Receipt(message_id, status, occurred_at, record.ts, **common)


# -- operator-style receipts -------------------------------------------------------------


def parse_operator(params: Mapping[str, str], check: SmsgidCheck,
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
    try:
        message_id, legacy = check.message_id(record.smsgid)
    except ValueError as exc:
        parsed.refuse(str(exc), record.smsgid)
        return parsed
    mapped = OPERATOR_STATUS_MAP[record.status]
    if mapped is None:
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
            provider_message_id=record.mid, legacy=legacy, origin={"meta": record.smsgid},
        ))
    return parsed


# -- binding to the message ---------------------------------------------------------------


def bind(parsed: ParsedReceipts, sender: str, contexts: Mapping[str, MessageContext]) -> None:
    """Refuse (in place) the receipts that their message context contradicts.

    Only receipts that :attr:`Receipt.needs_context` are checked: a ``clicked`` URL must be
    a link of the message (refused when the context or its links are unknown: an
    unverifiable URL is never passed on to analytics); a legacy smsgid must belong to a
    message that ``sender`` submitted (refused when no context says so).
    """
    kept: list[Receipt] = []
    for receipt in parsed.receipts:
        reason = _contradiction(receipt, sender, contexts.get(receipt.message_id))
        if reason is None:
            kept.append(receipt)
        else:
            _refuse(parsed, receipt, reason)
    parsed.receipts = kept


def _refuse(parsed: ParsedReceipts, receipt: Receipt, reason: str) -> None:
    """List ``receipt`` as refused, for ``reason``, where it was in the body."""
    origin = dict(receipt.origin)
    meta = origin.pop("meta", None)
    parsed.refuse(reason, meta if isinstance(meta, str) else None, **origin)


def _contradiction(receipt: Receipt, sender: str, context: MessageContext | None) -> str | None:
    if not receipt.needs_context:
        return None
    if context is not None and context.sender not in (None, sender):
        return OTHER_SENDER
    if receipt.legacy and (context is None or context.sender is None):
        return UNBOUND_LEGACY
    if receipt.status is Status.CLICKED:
        known = None if context is None else context.has_link(receipt.url or "")
        if known is None:
            return UNKNOWN_LINKS
        if not known:
            return URL_NOT_IN_MESSAGE
    return None


def state_refusal(state: State | None) -> str | None:
    """The refusal a receipt gets from its record's state (the same for every receipt kind).

    ========================================  =====================  ==================
    record state                              delivered/failed/...   clicked
    ========================================  =====================  ==================
    ``sending``, ``submitted``, ``uncertain``  accepted: the final    accepted (links)
    ``delivered``/``failed``/``rejected``/    accepted: replay, or   accepted (links)
    ``expired``                               ``final: false``
    no record (or the store is unreachable)   accepted               accepted (links)
    ``pending``                               refused                refused
    ========================================  =====================  ==================

    See the module documentation for why.
    """
    return NOT_SUBMITTED if state is State.PENDING else None


def bind_found(parsed: ParsedReceipts, sender: str, found: Mapping[str, Found], *,
               state_only: bool = False) -> None:
    """:func:`bind` against what the stores know, with the record state checked too
    (``state_only``: the state alone, for receipts :func:`bind` checked already).

    Every receipt kept carries its :class:`Found` (for the event and the transition).
    """
    kept: list[Receipt] = []
    for receipt in parsed.receipts:
        known = found.get(receipt.message_id, NOT_FOUND)
        reason = state_refusal(known.state)
        if reason is None and not state_only:
            reason = _contradiction(receipt, sender, known.context)
        if reason is None:
            # the one field set after construction (compare=False): cheaper than replace()
            object.__setattr__(receipt, "found", known)
            kept.append(receipt)
        else:
            _refuse(parsed, receipt, reason)
    parsed.receipts = kept


# -- enrichment ---------------------------------------------------------------------------


def event_fields(receipt: Receipt, sender: str, context: MessageContext | None,
                 event_id: str | None = None) -> dict[str, Any]:
    """The :class:`ReceiptEvent` fields of ``receipt`` (already valid: built from a parsed
    receipt and a stored context), completed with the message context when there is one."""
    return {
        "event_id": event_id or receipt.event_id,
        "message_id": receipt.message_id,
        "campaign_id": context.campaign_id if context else None,
        "status": receipt.status,
        "occurred_at": receipt.occurred_at,
        "sender": sender,
        "provider_message_id": receipt.provider_message_id,
        "error_code": receipt.error_code,
        "error": receipt.error,
        "url": receipt.url,
        "segments": context.segments if context else None,
        "encoding": context.encoding if context else None,
        "metadata": context.metadata if context else {},
    }


def to_event(receipt: Receipt, sender: str, context: MessageContext | None) -> ReceiptEvent:
    """The event of ``receipt``, completed with the message context when there is one."""
    return ReceiptEvent(**event_fields(receipt, sender, context))
