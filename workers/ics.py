"""The ICS adapter: the only code that talks HTTP to ICS (``POST /datasend``).

It turns every possible answer into a :class:`SubmitResult`: per-record acceptances and
refusals on 200 (matched to the records by :func:`match_answers`), or a batch-wide failure
whose :class:`~ics_sms.workers.policy.Disposition` says whether ICS may have taken the
records (UNCERTAIN), certainly did not (RETRY), wants us slower, refuses the sender, or
refused the request (REJECT). Tokens never leave this module except in the
``Authorization`` header.

Whether a failed request reached ICS decides between RETRY and UNCERTAIN, so connecting
has a deadline of its own (:data:`CONNECT_SHARE` of the timeout): a timeout while
connecting (or waiting for a pooled connection) is RETRY; any later timeout is UNCERTAIN.

Everything taken from ICS (error text, record answers) is redacted here, where it enters:
an ICS that echoes the ``Authorization`` header or the ``dlrurl`` must not put the sender's
token or tracking token into logs, events, dead letters or retry copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr, ValidationError

from ics_sms.schemas.ics import (
    DATASEND_PATH,
    RecordResult,
    datasend_body,
    datasend_record,
    datasend_response,
)
from ics_sms.schemas.redact import SECRETS, tracking_tokens
from ics_sms.workers.policy import Disposition, classify_http_status

__all__ = ["CONNECT_SHARE", "Batch", "IcsClient", "SubmitResult", "match_answers"]

CONNECT_SHARE = 0.5
"""The part of the ICS timeout that connecting (or waiting for a pooled connection) may
take. It must stay below 1 so that a timeout while connecting is told apart from one after
the request was written."""

_MAX_ERROR_TEXT = 200
_REDACTED_BYTES = 4096
"""How much of an error body is redacted before it is cut to ``_MAX_ERROR_TEXT``."""
_ICS_TEXT = ("error", "mid", "to", "from_")
"""The fields of a record answer that are ICS's text (and reach events and logs)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A datasend body ready to send, the smsgids of its records in order, and what ICS
    must not be quoted with (the tracking token of its ``dlrurl``)."""

    body: bytes
    smsgids: list[str]
    secrets: tuple[str, ...] = ()


@dataclass(slots=True)
class SubmitResult:
    """Outcome of one datasend call (one request, or the requests of a split batch).

    ``ok`` (``disposition`` is None): ``results`` maps our smsgid to ICS's answer for each
    record ICS answered for. A record missing from ``results`` got no answer: ICS may have
    taken it (UNCERTAIN), unless ``failed`` holds the result of the split request that
    carried it (see :meth:`disposition_of`).

    Not ``ok``: the whole request failed, and ``disposition`` says what that means for
    every record of it.
    """

    results: dict[str, RecordResult] = field(default_factory=dict)
    disposition: Disposition | None = None
    status: int | None = None
    reason: str = ""
    retry_after_s: float | None = None
    latency_s: float = 0.0
    failed: dict[str, SubmitResult] = field(default_factory=dict, repr=False)
    """After a split (:meth:`~ics_sms.workers.submit.Submitter.call`): smsgid to the failed
    result of the request that carried the record."""
    requests: int = 1
    """HTTP requests this result took (more than one when the batch was split)."""

    @property
    def ok(self) -> bool:
        return self.disposition is None

    def disposition_of(self, smsgid: str) -> Disposition | None:
        """None when ICS answered for this record (see ``results``), else what its lack of
        an answer means."""
        if self.disposition is not None:
            return self.disposition
        if smsgid in self.results:
            return None
        part = self.failed.get(smsgid)
        return part.disposition if part is not None else Disposition.UNCERTAIN

    def reason_of(self, smsgid: str) -> str:
        """Why this record got no answer (empty when it got one)."""
        if self.disposition is not None:
            return self.reason
        if smsgid in self.results:
            return ""
        part = self.failed.get(smsgid)
        return part.reason if part is not None else "ICS gave no answer for this record"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _host_and_port(url: str) -> str:
    """``host:port`` of ``url`` for error reasons: never its user, password or query."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class IcsClient:
    """Submits batches to ICS over one shared :class:`aiohttp.ClientSession`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + DATASEND_PATH
        self._where = _host_and_port(base_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s,
                                              connect=timeout_s * CONNECT_SHARE)
        self.requests = 0

    def __repr__(self) -> str:
        return f"<IcsClient {self._url} requests={self.requests}>"

    @staticmethod
    def build(user: str, records: list[dict[str, str]], *, dlrurl: str,
              urlshortening: bool) -> Batch:
        return Batch(datasend_body(user, records, dlrurl=dlrurl, urlshortening=urlshortening),
                     [record["smsgid"] for record in records],
                     secrets=tuple(tracking_tokens(dlrurl)))

    @staticmethod
    def record(to_e164: str, sender_id: str, text: str, smsgid: str, peid: str | None,
               templateid: str | None) -> dict[str, str]:
        return datasend_record(to_e164.removeprefix("+"), sender_id, text, smsgid, peid,
                               templateid)

    async def submit(self, batch: Batch, token: SecretStr) -> SubmitResult:
        body = batch.body
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {token.get_secret_value()}"}
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.requests += 1
        try:
            async with self._session.post(self._url, data=body, headers=headers,
                                          timeout=self._timeout) as response:
                payload = await response.read()
                result = self._interpret(response.status, payload, response.content_type,
                                         response.headers.get("Retry-After"), batch.smsgids,
                                         _redactor(batch, token))
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError,
                aiohttp.InvalidURL) as exc:
            # nothing was written: refused, DNS, TLS, connect timeout, no pooled connection
            result = SubmitResult(disposition=Disposition.RETRY,
                                  reason=f"ICS unreachable at {self._where}: {type(exc).__name__}")
        except TimeoutError:
            result = SubmitResult(disposition=Disposition.UNCERTAIN,
                                  reason=f"ICS timed out at {self._where} after the request")
        except aiohttp.ClientError as exc:
            # reset, disconnect or a broken answer after the request was (partly) written
            result = SubmitResult(disposition=Disposition.UNCERTAIN,
                                  reason=f"ICS answer lost at {self._where}: {type(exc).__name__}")
        result.latency_s = loop.time() - started
        return result

    @staticmethod
    def _interpret(status: int, payload: bytes, content_type: str, retry_after: str | None,
                   smsgids: list[str], clean: Callable[[str], str]) -> SubmitResult:
        if status != 200:
            # redacted, then cut: a cut must not leave half a secret unrecognised
            text = clean(payload[:_REDACTED_BYTES].decode("utf-8", "replace"))
            text = text[:_MAX_ERROR_TEXT].strip()
            html = _is_html(content_type, payload)
            return SubmitResult(disposition=classify_http_status(status, html=html),
                                status=status, reason=f"ICS answered HTTP {status}: {text}",
                                retry_after_s=_retry_after(retry_after))
        try:
            answers = datasend_response.validate_json(payload)
        except (ValidationError, orjson.JSONDecodeError, ValueError):
            return SubmitResult(disposition=classify_http_status(status), status=status,
                                reason="ICS answered 200 with an unreadable body")
        matched = match_answers(smsgids, answers)
        return SubmitResult(results={smsgid: _cleaned(answer, clean)
                                     for smsgid, answer in matched.items()}, status=status)


def _is_html(content_type: str, payload: bytes) -> bool:
    """An HTML page: written by whatever stands in front of ICS, not by ICS's API."""
    return "html" in content_type.lower() or payload.lstrip()[:1] == b"<"


def match_answers(smsgids: Sequence[str], answers: Sequence[RecordResult]
                  ) -> dict[str, RecordResult]:
    """ICS's answers attributed to the records of a request (``smsgids``, in order).

    1. By the echoed smsgid, as sent or in another case (ICS may lower-case it). Our
       smsgids are ``message_id.MAC`` in base64url, where case matters: when two records'
       smsgids differ only in case, an echo of either (even an exact one, which a
       lower-casing ICS writes for both) is ambiguous and matches nothing here.
    2. By position, for the answers left over, when there are exactly as many answers as
       records and every answer matched in 1. stands at its record's position (ICS answers
       in request order; an order the echoes contradict is not trusted).

    Each answer goes to at most one record. A record claimed by two answers that differ
    keeps neither; a record without an answer is missing from the result.
    """
    first: dict[str, int] = {}
    for index, smsgid in enumerate(smsgids):
        first.setdefault(smsgid, index)
    folded: dict[str, int | None] = {}
    for smsgid, index in first.items():
        key = smsgid.lower()
        folded[key] = None if key in folded else index  # None: two records fold alike
    claims: dict[int, int] = {}  # record index -> answer index
    contested: set[int] = set()
    unmatched: list[int] = []
    for position, answer in enumerate(answers):
        # an exact echo of an ambiguous id is ambiguous too: a lower-casing ICS writes it
        # for both records
        record = None if answer.smsgid is None else folded.get(answer.smsgid.lower())
        if record is None:
            unmatched.append(position)
        elif record not in claims:
            claims[record] = position
        elif answers[claims[record]] != answer:
            contested.add(record)
    in_order = (len(answers) == len(smsgids) and not contested
                and all(record == position for record, position in claims.items()))
    if in_order:
        for position in unmatched:
            claims.setdefault(position, position)
    return {smsgids[record]: answers[position] for record, position in claims.items()
            if record not in contested}


def _redactor(batch: Batch, token: SecretStr) -> Callable[[str], str]:
    """Redaction of ICS text for one call: the process's known secrets, this call's token
    and tracking token, and every pattern of :mod:`ics_sms.schemas.redact`."""
    return SECRETS.extended(token.get_secret_value(), *batch.secrets)


def _cleaned(answer: RecordResult, clean: Callable[[str], str]) -> RecordResult:
    """``answer`` with every text ICS wrote redacted (the smsgid is ours, matched only)."""
    changes = {}
    for name in _ICS_TEXT:
        value = getattr(answer, name)
        if isinstance(value, str) and (redacted := clean(value)) != value:
            changes[name] = redacted
    return answer.model_copy(update=changes) if changes else answer
