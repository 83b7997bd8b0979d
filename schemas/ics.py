"""ICS wire shapes (see ICS_API.md): the only place that spells ICS field names.

The worker's ICS adapter, the sandbox and the callback receiver all speak through these
models, so a renamed ICS field changes here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, TypeAdapter

__all__ = [
    "DATASEND_PATH",
    "FAILURE_CODES",
    "MAX_RECORDS_PER_REQUEST",
    "OPERATOR_STATUS_MAP",
    "DatasendRecord",
    "DatasendRequest",
    "OperatorReceipt",
    "OperatorStatus",
    "ReceiptData",
    "ReceiptGroup",
    "RecordResult",
    "datasend_body",
    "datasend_record",
    "datasend_response",
    "receipt_groups",
]

DATASEND_PATH = "/datasend"
MAX_RECORDS_PER_REQUEST = 1000

FAILURE_CODES: dict[str, str] = {
    "900": "other",
    "901": "DND",
    "902": "spam",
    "903": "blacklisted",
    "904": "provider system error",
    "905": "subscriber error",
    "906": "header blocked by DLT",
    "907": "entity blocked by DLT",
    "908": "template blocked by DLT",
    "909": "DLT consent error",
    "910": "invalid subscriber",
    "912": "inbox full",
    "913": "NDNC rejected",
    "914": "undelivered",
    "915": "dropped",
    "916": "expired",
    "917": "force expired",
    "918": "duplicate (same text to same number within 30 min)",
    "919": "DLT failure",
    "920": "URL not whitelisted",
}


class _Ics(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class DatasendRecord(_Ics):
    """One SMS inside a datasend request."""

    to: Annotated[str, StringConstraints(pattern=r"^[1-9]\d{6,14}$")]
    from_: str = Field(alias="from")
    smstext: Annotated[str, StringConstraints(min_length=1)]
    smsgid: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    peid: str | None = None
    templateid: str | None = None


class DatasendRequest(_Ics):
    """Body of ``POST {ICS_URL}/datasend``."""

    user: str
    allowunicode: bool = True
    urlshortening: Literal[0, 1] = 0
    dlrurl: str | None = None
    smstosend: list[DatasendRecord] = Field(min_length=1, max_length=MAX_RECORDS_PER_REQUEST)


def datasend_record(to: str, sender_id: str, text: str, smsgid: str, peid: str | None,
                    templateid: str | None) -> dict[str, str]:
    """One record of a datasend body (``to`` without ``+``), as plain JSON-ready data.

    The worker's hot path builds these instead of :class:`DatasendRecord` objects; a test
    holds them to the model.
    """
    record = {"to": to, "from": sender_id, "smstext": text, "smsgid": smsgid}
    if peid is not None:
        record["peid"] = peid
    if templateid is not None:
        record["templateid"] = templateid
    return record


def datasend_body(user: str, records: list[dict[str, str]], *, dlrurl: str,
                  urlshortening: bool) -> bytes:
    """The JSON body of ``POST /datasend`` (see :class:`DatasendRequest`)."""
    return orjson.dumps({"user": user, "allowunicode": True,
                         "urlshortening": 1 if urlshortening else 0, "dlrurl": dlrurl,
                         "smstosend": records})


class RecordResult(_Ics):
    """ICS's answer for one record: ``mid`` on acceptance, ``Error`` when refused."""

    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    smsgid: str | None = None
    mid: str | None = None
    error: str | None = Field(default=None, alias="Error")

    @property
    def accepted(self) -> bool:
        return self.mid is not None and self.error is None


datasend_response: TypeAdapter[list[RecordResult]] = TypeAdapter(list[RecordResult])


def _optional_id(value: object) -> str | None:
    """An informational id (ICS's ``mid``) if usable; anything odd is dropped, never fatal."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= 100:
        return value.strip()
    return None


ProviderId = Annotated[str | None, BeforeValidator(_optional_id)]
"""ICS's message id (``mid``) where a receipt carries it (not documented for receipts)."""


class ReceiptData(_Ics):
    """One receipt inside an event group. ``meta`` is our smsgid exactly as sent."""

    ts: int = Field(ge=0)
    meta: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    code: str | None = None
    description: str | None = Field(default=None, max_length=1000)
    url: str | None = Field(default=None, max_length=2048)
    short_url: str | None = Field(default=None, alias="shortUrl", max_length=2048)
    mid: ProviderId = None


class ReceiptGroup(_Ics):
    """A group of receipts of one kind: ``delivered``, ``failed``, ``clicked``, ``replied``."""

    event: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    data: list[object]


receipt_groups: TypeAdapter[list[ReceiptGroup]] = TypeAdapter(list[ReceiptGroup])


class OperatorStatus(StrEnum):
    DELIVRD = "DELIVRD"
    UNDELIV = "UNDELIV"
    REJECTD = "REJECTD"
    EXPIRED = "EXPIRED"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"
    ACCEPTD = "ACCEPTD"
    ENROUTE = "ENROUTE"


OPERATOR_STATUS_MAP: dict[OperatorStatus, str | None] = {
    OperatorStatus.DELIVRD: "delivered",
    OperatorStatus.EXPIRED: "expired",
    OperatorStatus.ACCEPTD: None,
    OperatorStatus.ENROUTE: None,
    OperatorStatus.UNDELIV: "failed",
    OperatorStatus.REJECTD: "failed",
    OperatorStatus.DELETED: "failed",
    OperatorStatus.UNKNOWN: "failed",
}
"""Operator-style status to our status name; ``None`` means intermediate, no event."""


class OperatorReceipt(_Ics):
    """An operator-style receipt (GET query or form POST)."""

    smsgid: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    status: OperatorStatus
    err: str | None = Field(default=None, max_length=32)
    ts: int | None = Field(default=None, ge=0)
    mid: ProviderId = None
