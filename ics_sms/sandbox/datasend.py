"""Reading a ``POST /datasend`` body: the request envelope and a verdict per record.

The body is validated in one go with :class:`ics_sms.schemas.ics.DatasendRequest`. A record that
breaks the model (bad number, empty text...) does not fail the request: like ICS, the
sandbox refuses that record alone, so the answer keeps one entry per record, in order.
Anything else that is wrong (not JSON, no ``user``, no records) is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ics_sms.sandbox.outcomes import REFUSED, REFUSED_REASON
from ics_sms.schemas.errors import describe
from ics_sms.schemas.ics import DatasendRecord, DatasendRequest
from ics_sms.schemas.messages import Encoding
from ics_sms.workers.encoding import analyse

__all__ = ["BadRequest", "Refusal", "Submission", "parse_datasend", "refusal_reason"]

_RECORD_FIELD_REASONS = {
    "to": "invalid destination: country code + national number, digits only",
    "from": "sender header missing",
    "smstext": "message text missing or empty",
    "smsgid": "smsgid missing or longer than 100 characters",
    "peid": "invalid DLT entity id",
    "templateid": "invalid DLT template id",
}
DLT_MISSING = "DLT template/entity missing"


class BadRequest(Exception):
    """The body cannot be read as a datasend request; ``reasons`` say why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record refused before it was accepted, with what it said of itself."""

    to: str | None
    smsgid: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Submission:
    """A readable datasend request: the envelope and each record or its refusal, in order."""

    user: str
    urlshortening: bool
    allowunicode: bool
    dlrurl: str | None
    entries: list[DatasendRecord | Refusal]

    def sends_to(self, number: str) -> bool:
        return any(isinstance(e, DatasendRecord) and e.to == number for e in self.entries)


def parse_datasend(body: bytes) -> Submission:
    """The submission in ``body``; raises :class:`BadRequest` when it is not one."""
    try:
        request = DatasendRequest.model_validate_json(body)
    except ValidationError as exc:
        submission = _partly_valid(body, exc)
    else:
        submission = _submission(request, list(request.smstosend))
    if submission.dlrurl is not None and not _is_http_url(submission.dlrurl):
        raise BadRequest(["dlrurl: must be an http(s) URL"])
    return submission


def refusal_reason(record: DatasendRecord, allowunicode: bool) -> str | None:
    """Why ICS refuses a well-formed record, or None when it accepts it."""
    if not record.from_:
        return _RECORD_FIELD_REASONS["from"]
    if not record.smstext.strip():
        return _RECORD_FIELD_REASONS["smstext"]
    if record.to.startswith("91"):
        if len(record.to) != 12 or record.to[2] not in "6789":
            return "invalid Indian mobile number"
        if not record.peid or not record.templateid:
            return DLT_MISSING
    if record.to == REFUSED:
        return REFUSED_REASON
    if not allowunicode and analyse(record.smstext).encoding is Encoding.UCS2:
        return "unicode text but allowunicode is false"
    return None


def _submission(
    request: DatasendRequest, entries: list[DatasendRecord | Refusal]
) -> Submission:
    return Submission(
        user=request.user,
        urlshortening=request.urlshortening == 1,
        allowunicode=request.allowunicode,
        dlrurl=request.dlrurl,
        entries=entries,
    )


def _partly_valid(body: bytes, exc: ValidationError) -> Submission:
    """A submission whose invalid records are refused, when only records are invalid."""
    refusals = _record_refusals(exc.errors(include_url=False, include_input=False))
    if refusals is None:
        raise BadRequest(describe(exc))
    raw = _raw_request(body)
    records: list[Any] = raw["smstosend"]
    good = [record for index, record in enumerate(records) if index not in refusals]
    if not good:
        return _all_refused(raw, [_refusal(r, refusals[i]) for i, r in enumerate(records)])
    try:
        request = DatasendRequest.model_validate({**raw, "smstosend": good})
    except ValidationError as again:  # JSON and Python validation disagree: refuse it all
        raise BadRequest(describe(again)) from None
    accepted = iter(request.smstosend)
    entries: list[DatasendRecord | Refusal] = [
        next(accepted) if index not in refusals else _refusal(record, refusals[index])
        for index, record in enumerate(records)
    ]
    return _submission(request, entries)


def _all_refused(raw: dict[str, Any], refusals: list[Refusal]) -> Submission:
    """A submission of refusals only; its envelope passed validation, so ``user`` is a str."""
    dlrurl = raw.get("dlrurl")
    entries: list[DatasendRecord | Refusal] = list(refusals)
    return Submission(raw["user"], urlshortening=False, allowunicode=True,
                      dlrurl=dlrurl if isinstance(dlrurl, str) else None, entries=entries)


def _record_refusals(errors: list[ErrorDetails]) -> dict[int, str] | None:
    """``{record index: reason}`` when every error is inside a record, else None."""
    refusals: dict[int, str] = {}
    for error in errors:
        loc = error["loc"]
        if len(loc) < 2 or loc[0] != "smstosend" or not isinstance(loc[1], int):
            return None
        field = str(loc[2]) if len(loc) > 2 else ""
        reason = _RECORD_FIELD_REASONS.get(field, "malformed record")
        refusals.setdefault(loc[1], reason)
    return refusals


def _raw_request(body: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest([f"not valid JSON: {exc}"]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("smstosend"), list):
        raise BadRequest(["smstosend: must be a list of records"])
    return raw


def _refusal(record: object, reason: str) -> Refusal:
    fields = record if isinstance(record, dict) else {}
    to, smsgid = fields.get("to"), fields.get("smsgid")
    return Refusal(
        to if isinstance(to, str) else None,
        smsgid if isinstance(smsgid, str) else None,
        reason,
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
