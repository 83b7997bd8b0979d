"""The JSON the sandbox writes, keyed by the aliases of the models in :mod:`ics_sms.schemas.ics`.

Answers and receipts are plain dicts (built per record on the hot path, serialised with
orjson), but their keys come from the ICS models, so a renamed ICS field changes in
``schemas/ics.py`` only. Tests read everything back through those models.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from ics_sms.schemas.ics import ReceiptData, ReceiptGroup, RecordResult
from ics_sms.schemas.messages import Status

__all__ = [
    "RECEIPT_EVENTS",
    "Answer",
    "ReceiptBody",
    "accepted",
    "clicked",
    "delivered",
    "failed",
    "group_receipts",
    "lowercased",
    "refused",
]

Answer = dict[str, str | None]
ReceiptBody = dict[str, str | int]

RECEIPT_EVENTS = (Status.DELIVERED.value, Status.FAILED.value, Status.CLICKED.value)
"""Event names of the receipt groups, in the order they appear in one POST."""

DELIVERED_DESCRIPTION = "Delivered to handset"


def _key(model: type[BaseModel], field: str) -> str:
    return model.model_fields[field].alias or field


_TO = _key(RecordResult, "to")
_FROM = _key(RecordResult, "from_")
_MID = _key(RecordResult, "mid")
_SMSGID = _key(RecordResult, "smsgid")
_ERROR = _key(RecordResult, "error")
_EVENT = _key(ReceiptGroup, "event")
_DATA = _key(ReceiptGroup, "data")
_TS = _key(ReceiptData, "ts")
_META = _key(ReceiptData, "meta")
_CODE = _key(ReceiptData, "code")
_DESCRIPTION = _key(ReceiptData, "description")
_URL = _key(ReceiptData, "url")
_SHORT_URL = _key(ReceiptData, "short_url")


def accepted(to: str, sender: str, mid: str, smsgid: str) -> Answer:
    return {_TO: to, _FROM: sender, _MID: mid, _SMSGID: smsgid}


def refused(to: str | None, smsgid: str | None, reason: str) -> Answer:
    return {_TO: to, _SMSGID: smsgid, _ERROR: reason}


def lowercased(answer: Answer) -> Answer:
    """``answer`` with its smsgid echoed lower-cased (an ICS that changes the case)."""
    smsgid = answer.get(_SMSGID)
    return {**answer, _SMSGID: smsgid.lower()} if smsgid else answer


def delivered(ts: int, smsgid: str) -> ReceiptBody:
    return {_TS: ts, _META: smsgid, _DESCRIPTION: DELIVERED_DESCRIPTION}


def failed(ts: int, smsgid: str, code: str, description: str) -> ReceiptBody:
    return {_TS: ts, _META: smsgid, _CODE: code, _DESCRIPTION: description}


def clicked(ts: int, smsgid: str, url: str, short_url: str) -> ReceiptBody:
    return {_TS: ts, _META: smsgid, _URL: url, _SHORT_URL: short_url}


def group_receipts(receipts: Iterable[tuple[str, ReceiptBody]]) -> list[dict[str, object]]:
    """``(event, data)`` pairs as ICS posts them: one group per event, fixed order."""
    groups: dict[str, list[ReceiptBody]] = {}
    for event, data in receipts:
        groups.setdefault(event, []).append(data)
    order = sorted(groups, key=lambda e: RECEIPT_EVENTS.index(e) if e in RECEIPT_EVENTS else 99)
    return [{_EVENT: event, _DATA: groups[event]} for event in order]
