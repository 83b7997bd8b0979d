"""HTTP glue of the receiver: read a request, answer in JSON, never a traceback.

Answers (ICS_API.md): ``200 {"status", "processed", "unprocessed"}`` once the events are
confirmed by the broker; ``400`` for a body that cannot be read, ``404`` for an unknown
tracking URL, ``413`` for a body over the limit, ``503`` when the broker cannot confirm
(ICS sends again later). Error answers carry a ``reason``. Tracking tokens are secrets:
they are never logged (the access log is off, see :mod:`ics_sms.callbacks.serve`).
"""

from __future__ import annotations

import asyncio
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
    count_receipts,
    refusal_kind,
    route_label,
)
from ics_sms.callbacks.receipts import BodyError, ParsedReceipts, parse_groups, parse_operator
from ics_sms.callbacks.service import ReceiptService
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.smsgid import SmsgidSigner

__all__ = ["ReceiptViews", "error_response", "json_errors", "json_response"]

log = structlog.get_logger(__name__)

_JSON_STARTS = (b"[", b"{")
_BODY_TIMEOUT_S = 10.0
"""A body that trickles in slower than this is cut off (slowloris)."""
_UNAVAILABLE = "cannot store receipts right now, send them again later"


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


class ReceiptViews:
    """The receiver's endpoints, bound to what they need."""

    def __init__(self, senders: Senders, signer: SmsgidSigner, service: ReceiptService,
                 connection: BrokerConnection) -> None:
        self._senders = senders
        self._signer = signer
        self._service = service
        self._connection = connection

    def __repr__(self) -> str:
        return f"<ReceiptViews senders={len(self._senders)} connection={self._connection!r}>"

    async def receipts(self, request: web.Request) -> web.Response:
        """``GET|POST /ics/{token}/receipts``: one sender's receipts."""
        sender = self._senders.by_tracking_token(request.match_info["token"])
        if sender is None:
            return error_response(404, "unknown tracking URL")
        with structlog.contextvars.bound_contextvars(sender=sender.name):
            try:
                async with asyncio.timeout(_BODY_TIMEOUT_S):
                    parsed = await self._read_safely(request)
            except TimeoutError:
                return error_response(408, f"body not received within {_BODY_TIMEOUT_S:g}s")
            except BodyError as exc:
                log.info("receipt request refused", reason=str(exc))
                return error_response(400, str(exc))
            if parsed.unprocessed:
                log.warning("receipts refused", refused=len(parsed.unprocessed),
                            first_reason=parsed.unprocessed[0]["reason"])
                for entry in parsed.unprocessed:
                    REFUSED.labels(refusal_kind(str(entry["reason"]))).inc()
            try:
                with PUBLISH_DURATION.time():
                    await self._service.publish(sender.name, parsed.receipts)
            except BrokerError as exc:
                log.warning("receipts not stored, answering 503", reason=str(exc),
                            receipts=len(parsed.receipts))
                return error_response(503, _UNAVAILABLE)
            log.debug("receipts stored", events=len(parsed.receipts), ignored=parsed.ignored)
            count_receipts(sender.name, (r.status.value for r in parsed.receipts))
            return json_response(parsed.answer())

    async def _read_safely(self, request: web.Request) -> ParsedReceipts:
        """:meth:`_read`, with every way a body can be unreadable answered as a 400."""
        try:
            return await self._read(request)
        except (ValueError, LookupError, HttpProcessingError, RequestPayloadError,
                web.HTTPBadRequest) as exc:
            if isinstance(exc, BodyError):
                raise
            raise BodyError(f"unreadable body: {type(exc).__name__}") from None

    async def _read(self, request: web.Request) -> ParsedReceipts:
        """JSON event groups, or an operator receipt from the query or a form.

        A body that looks like JSON is read as JSON whatever its content type says.
        """
        now = datetime.now(UTC)
        if request.method == "GET":
            return parse_operator(request.query, self._signer, now)
        if request.content_type == "multipart/form-data":
            return parse_operator(await _form_fields(request), self._signer, now)
        body = await request.read()
        if body.lstrip()[:1] in _JSON_STARTS:
            return parse_groups(body, self._signer)
        if request.content_type == "application/x-www-form-urlencoded":
            return parse_operator(await _form_fields(request), self._signer, now)
        if not body and "smsgid" in request.query:
            return parse_operator(request.query, self._signer, now)
        return parse_groups(body, self._signer)

    async def healthz(self, _request: web.Request) -> web.Response:
        """The process answers."""
        return json_response({"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """The broker connection is usable: receipts would be accepted."""
        if self._connection.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "unavailable", "reason": self._connection.reason}, 503)
