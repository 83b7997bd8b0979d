"""HTTP glue of the receiver: read a request, answer in JSON, never a traceback.

Answers (ICS_API.md): ``200 {"status", "processed", "unprocessed"}`` once the events are
confirmed by the broker; ``400`` for a body that cannot be read, ``404`` for an unknown
tracking URL, ``413`` for a body over the limit, ``503`` when the broker cannot confirm
or the context store cannot be read for receipts that need it (ICS sends again later).
Error answers carry a ``reason``. Tracking tokens are secrets: they are never logged (the
access log is off, see :mod:`ics_sms.callbacks.serve`).

Senders are looked up per request in the configuration in use now (a
:class:`~ics_sms.stores.live.SendersView`, kept current by
:class:`~ics_sms.stores.live.LiveSenders`): a sender added while the receiver runs is served
at once. The tracking URL of a removed sender keeps accepting that sender's receipts for
``Settings.senders_grace_s`` (its smsgids are still checked against its name, so another
sender's receipts are refused there as anywhere). A request on a tracking URL of no sender
is answered 404, counted in ``ics_sms_receipts_unknown_url{reason}`` and logged at most
once per :data:`~ics_sms.workers.notices.LOG_INTERVAL_S` with the count (never the token):
an ICS portal pointing at a wrong or removed URL shows in the logs, not only as lost
receipts.

Forged and cross-sender receipts (:data:`~ics_sms.callbacks.receipts.FORGERIES`) are
refused *per record*: they are listed in ``unprocessed`` with their reason, logged (by
reason, never with the token), counted in ``ics_sms_receipts_refused{reason}`` and produce
no event, while the genuine receipts of the same request are published and the answer is
``200 partial``. Refusing the whole request would make ICS send the genuine receipts
again and again because of one bad record. A request in which nothing was accepted and
something was forged is answered ``403`` with the same body and a ``reason``: there is
nothing in it worth sending again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestPayloadError

from ics_sms.broker.base import BrokerError
from ics_sms.callbacks.connection import BrokerConnection
from ics_sms.callbacks.metrics import (
    PUBLISH_DURATION,
    REFUSED,
    REQUESTS,
    UNKNOWN_URL,
    count_receipts,
    refusal_kind,
    route_label,
)
from ics_sms.callbacks.receipts import (
    FORGERIES,
    BodyError,
    ParsedReceipts,
    SmsgidCheck,
    parse_groups,
    parse_operator,
)
from ics_sms.callbacks.service import ReceiptService
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import ContextStoreError
from ics_sms.stores.live import SendersView
from ics_sms.workers.notices import ThrottledLog

__all__ = ["ReceiptViews", "error_response", "json_errors", "json_response"]

log = structlog.get_logger(__name__)

_JSON_STARTS = (b"[", b"{")
_BODY_TIMEOUT_S = 10.0
"""A body that trickles in slower than this is cut off (slowloris)."""
_UNAVAILABLE = "cannot store receipts right now, send them again later"
_UNCHECKABLE = "cannot check receipts against their messages right now, send them again later"
_FORGED = "receipts refused: not bound to this sender's messages"


def json_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status,
                        content_type="application/json")


def error_response(status: int, reason: str) -> web.Response:
    """An error in the shape of a receipt answer, with the reason."""
    return json_response({"status": "fail", "processed": 0, "unprocessed": [],
                          "reason": reason}, status)


def json_errors(max_body_bytes: int) -> Middleware:
    """Middleware: every error answered in JSON, aiohttp's own (404, 405, 413...) too.

    An unexpected exception is a bug, not bad input: it is logged and answered 500 (which
    ICS retries), without a traceback in the answer.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _answer(request, handler)
        REQUESTS.labels(route_label(request.path), str(response.status)).inc()
        return response

    async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"body larger than {max_body_bytes} bytes")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason)
        except ConnectionResetError:
            log.info("client went away during the request", method=request.method)
            return error_response(400, "connection reset by the client")
        except Exception:
            log.exception("unexpected error while handling a request", method=request.method)
            return error_response(500, "internal error, send again later")

    return middleware


async def _form_fields(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _forged(parsed: ParsedReceipts) -> bool:
    return any(entry["reason"] in FORGERIES for entry in parsed.unprocessed)


def _report_refusals(parsed: ParsedReceipts) -> None:
    """Count refusals by reason and log them once per request (reasons, not the records)."""
    kinds: dict[str, int] = {}
    for entry in parsed.unprocessed:
        kind = refusal_kind(str(entry["reason"]))
        kinds[kind] = kinds.get(kind, 0) + 1
        REFUSED.labels(kind).inc()
    log.warning("receipts refused", refused=len(parsed.unprocessed), by_reason=kinds,
                first_reason=parsed.unprocessed[0]["reason"], accepted=len(parsed.receipts))


class ReceiptViews:
    """The receiver's endpoints, bound to what they need."""

    def __init__(self, senders: SendersView, signer: SmsgidSigner, service: ReceiptService,
                 connection: BrokerConnection, *, grace_s: float,
                 accept_legacy: bool = True,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._senders = senders
        self._signer = signer
        self._service = service
        self._connection = connection
        self._grace_s = grace_s
        self._accept_legacy = accept_legacy
        self._now = now
        self._unknown = ThrottledLog("receipts on a tracking URL of no sender")
        self._retired = ThrottledLog("receipts on the tracking URL of a removed sender",
                                     level="info")

    def __repr__(self) -> str:
        return (f"<ReceiptViews senders={len(self._senders.current)} "
                f"connection={self._connection!r}>")

    def _sender_of(self, senders: Senders, token: str) -> str | web.Response:
        """The name of the sender whose tracking URL this is (a removed one within its
        grace period too), or the 404 answer."""
        sender = senders.by_tracking_token(token)
        if sender is not None:
            return sender.name
        now = self._now()
        retired = senders.retired_by_tracking_token(token, now, self._grace_s)
        if retired is not None:
            self._retired.note((("sender", retired.name),))
            return retired.name
        gone = senders.retired_by_tracking_token(token, now, math.inf)
        if gone is None:
            UNKNOWN_URL.labels("unknown").inc()
            self._unknown.note((("reason", "unknown"),), configured=len(senders))
        else:
            UNKNOWN_URL.labels("grace_over").inc()
            self._unknown.note((("reason", "grace_over"), ("sender", gone.name)),
                               grace_s=self._grace_s)
        return error_response(404, "unknown tracking URL")

    async def receipts(self, request: web.Request) -> web.Response:
        """``GET|POST /ics/{token}/receipts``: one sender's receipts."""
        senders = self._senders.current  # one configuration for the whole request
        name = self._sender_of(senders, request.match_info["token"])
        if isinstance(name, web.Response):
            return name
        check = SmsgidCheck(self._signer, name,
                            [other for other in senders.senders if other != name],
                            self._accept_legacy)
        with structlog.contextvars.bound_contextvars(sender=name):
            try:
                async with asyncio.timeout(_BODY_TIMEOUT_S):
                    parsed = await self._read_safely(request, check)
            except TimeoutError:
                return error_response(408, f"body not received within {_BODY_TIMEOUT_S:g}s")
            except BodyError as exc:
                log.info("receipt request refused", reason=str(exc))
                return error_response(400, str(exc))
            try:
                await self._service.bind(parsed, name)
            except ContextStoreError as exc:
                log.warning("message contexts unreadable, answering 503", reason=str(exc),
                            receipts=len(parsed.receipts))
                return error_response(503, _UNCHECKABLE)
            if parsed.unprocessed:
                _report_refusals(parsed)
                if not parsed.processed and _forged(parsed):
                    return json_response({**parsed.answer(), "reason": _FORGED}, 403)
            try:
                with PUBLISH_DURATION.time():
                    await self._service.publish(name, parsed.receipts)
            except BrokerError as exc:
                log.warning("receipts not stored, answering 503", reason=str(exc),
                            receipts=len(parsed.receipts))
                return error_response(503, _UNAVAILABLE)
            log.debug("receipts stored", events=len(parsed.receipts), ignored=parsed.ignored)
            count_receipts(name, (r.status.value for r in parsed.receipts))
            return json_response(parsed.answer())

    async def _read_safely(self, request: web.Request, check: SmsgidCheck) -> ParsedReceipts:
        """:meth:`_read`, with every way a body can be unreadable answered as a 400."""
        try:
            return await self._read(request, check)
        except (ValueError, LookupError, HttpProcessingError, RequestPayloadError,
                web.HTTPBadRequest) as exc:
            if isinstance(exc, BodyError):
                raise
            raise BodyError(f"unreadable body: {type(exc).__name__}") from None

    async def _read(self, request: web.Request, check: SmsgidCheck) -> ParsedReceipts:
        """JSON event groups, or an operator receipt from the query or a form.

        A body that looks like JSON is read as JSON whatever its content type says.
        """
        now = datetime.now(UTC)
        if request.method == "GET":
            return parse_operator(request.query, check, now)
        if request.content_type == "multipart/form-data":
            return parse_operator(await _form_fields(request), check, now)
        body = await request.read()
        if body.lstrip()[:1] in _JSON_STARTS:
            return parse_groups(body, check)
        if request.content_type == "application/x-www-form-urlencoded":
            return parse_operator(await _form_fields(request), check, now)
        if not body and "smsgid" in request.query:
            return parse_operator(request.query, check, now)
        return parse_groups(body, check)

    async def healthz(self, _request: web.Request) -> web.Response:
        """The process answers."""
        return json_response({"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """The broker connection is usable: receipts would be accepted."""
        if self._connection.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "unavailable", "reason": self._connection.reason}, 503)
