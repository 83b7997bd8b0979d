"""The ICS adapter: the only code that talks HTTP to ICS (``POST /datasend``).

It turns every possible answer into a :class:`SubmitResult`: per-record acceptances and
refusals on 200, or a batch-wide failure whose :class:`~ics_sms.workers.policy.Disposition` says
whether to retry, slow down, pause the sender or give up. Tokens never leave this module
except in the ``Authorization`` header.

Everything taken from ICS (error text, record answers) is redacted here, where it enters:
an ICS that echoes the ``Authorization`` header or the ``dlrurl`` must not put the sender's
token or tracking token into logs, events, dead letters or retry copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

__all__ = ["Batch", "IcsClient", "SubmitResult"]

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
    """Outcome of one datasend call.

    On success ``results`` maps each smsgid to ICS's answer (records ICS did not answer
    for are missing and must be retried). On failure ``disposition`` is set.
    """

    results: dict[str, RecordResult] = field(default_factory=dict)
    disposition: Disposition | None = None
    status: int | None = None
    reason: str = ""
    retry_after_s: float | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.disposition is None


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
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
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
                result = self._interpret(response.status, payload,
                                         response.headers.get("Retry-After"), batch.smsgids,
                                         _redactor(batch, token))
        except TimeoutError:
            result = SubmitResult(disposition=Disposition.RETRY,
                                  reason=f"ICS timed out at {self._where}")
        except aiohttp.ClientError as exc:
            result = SubmitResult(disposition=Disposition.RETRY,
                                  reason=f"ICS unreachable at {self._where}: {type(exc).__name__}")
        result.latency_s = loop.time() - started
        return result

    @staticmethod
    def _interpret(status: int, payload: bytes, retry_after: str | None,
                   smsgids: list[str], clean: Callable[[str], str]) -> SubmitResult:
        if status != 200:
            # redacted, then cut: a cut must not leave half a secret unrecognised
            text = clean(payload[:_REDACTED_BYTES].decode("utf-8", "replace"))
            text = text[:_MAX_ERROR_TEXT].strip()
            return SubmitResult(disposition=classify_http_status(status), status=status,
                                reason=f"ICS answered HTTP {status}: {text}",
                                retry_after_s=_retry_after(retry_after))
        try:
            answers = datasend_response.validate_json(payload)
        except (ValidationError, orjson.JSONDecodeError, ValueError):
            return SubmitResult(disposition=Disposition.RETRY, status=status,
                                reason="ICS answered 200 with an unreadable body")
        results: dict[str, RecordResult] = {}
        for index, answer in enumerate(answers):
            smsgid = answer.smsgid
            if smsgid is None and index < len(smsgids):
                smsgid = smsgids[index]  # no echo: answers come in request order
            if smsgid is not None:
                results[smsgid] = _cleaned(answer, clean)
        return SubmitResult(results=results, status=status)


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
