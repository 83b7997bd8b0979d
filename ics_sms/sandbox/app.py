"""The sandbox's aiohttp application: ``POST /datasend`` plus a control and stats API.

Routes:

- ``POST /datasend``: the ICS send API (see ICS_API.md).
- ``GET /_stats``: counters (requests, records accepted/refused, duplicate smsgids,
  receipts posted/pending/retried/failed, answer faults...); ``?smsgids=1`` adds
  ``accepted_by_smsgid``, how many times each smsgid was accepted.
- ``GET /_control``: the current fault knobs; ``POST /_control`` changes them at run time
  (JSON, see :class:`~ics_sms.sandbox.faults.ControlRequest`), and sets the token of ICS
  accounts (``accounts``: a token rotated on the portal).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import hdrs, web
from pydantic import ValidationError

from ics_sms.sandbox import wire
from ics_sms.sandbox.auth import Accounts, AuthError
from ics_sms.sandbox.config import SandboxConfig
from ics_sms.sandbox.datasend import BadRequest, parse_datasend
from ics_sms.sandbox.dispatcher import ReceiptDispatcher
from ics_sms.sandbox.faults import AnswerFault, ControlRequest, Faults, retry_after_header
from ics_sms.sandbox.gateway import Gateway
from ics_sms.sandbox.outcomes import SERVER_ERROR
from ics_sms.sandbox.stats import SandboxStats
from ics_sms.schemas.errors import describe
from ics_sms.schemas.ics import DATASEND_PATH, DatasendRecord

__all__ = ["STATE", "SandboxState", "create_app"]

log = structlog.get_logger(__name__)

STATS_PATH = "/_stats"
CONTROL_PATH = "/_control"
HTML_PAGE = ("<html><head><title>502 Bad Gateway</title></head>"
             "<body><h1>Bad Gateway</h1><p>upstream sent an invalid response</p></body></html>")


@dataclass(frozen=True, slots=True)
class SandboxState:
    """Everything the handlers share; one per application."""

    config: SandboxConfig
    accounts: Accounts
    stats: SandboxStats
    faults: Faults
    dispatcher: ReceiptDispatcher
    gateway: Gateway

    def stats_json(self, *, by_smsgid: bool = False) -> dict[str, Any]:
        return self.stats.as_json(receipts_pending=self.dispatcher.pending, by_smsgid=by_smsgid)


STATE = web.AppKey("sandbox_state", SandboxState)


def create_app(config: SandboxConfig) -> web.Application:
    """A sandbox application; receipts start flowing once it runs (cleanup context)."""
    app = web.Application(client_max_size=config.max_body_bytes)
    app[STATE] = _new_state(config)
    app.cleanup_ctx.append(_receipts_running)
    app.router.add_post(DATASEND_PATH, _datasend)
    app.router.add_get(STATS_PATH, _stats)
    app.router.add_get(CONTROL_PATH, _show_control)
    app.router.add_post(CONTROL_PATH, _control)
    return app


def _new_state(config: SandboxConfig) -> SandboxState:
    stats = SandboxStats()
    rng = random.Random(config.seed)
    faults = Faults(config)
    dispatcher = ReceiptDispatcher(config, stats, random.Random(rng.random()),
                                   paused=lambda: faults.receipts_paused)
    gateway = Gateway(config, stats, faults, dispatcher, rng)
    return SandboxState(config, Accounts(config.accounts), stats, faults, dispatcher, gateway)


async def _receipts_running(app: web.Application) -> AsyncIterator[None]:
    """Start the clock of planned faults and the receipt flusher; stop it on shutdown."""
    state = app[STATE]
    state.faults.begin(asyncio.get_running_loop().time())
    await state.dispatcher.start()
    yield
    await state.dispatcher.close()


# -- responses -----------------------------------------------------------------------------


def _json(state: SandboxState, status: int, payload: object,
          headers: dict[str, str] | None = None) -> web.Response:
    state.stats.responses[status] += 1
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers,
                        content_type="application/json")


def _error(state: SandboxState, status: int, reason: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return _json(state, status, {"error": reason}, headers)


# -- handlers ------------------------------------------------------------------------------


async def _datasend(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.requests += 1
    state.stats.requests_in_flight += 1
    try:
        return await _handle_datasend(request, state)
    finally:
        state.stats.requests_in_flight -= 1


async def _handle_datasend(request: web.Request, state: SandboxState) -> web.Response:
    faults = state.faults
    if faults.in_outage(asyncio.get_running_loop().time()):
        return _error(state, 503, "service unavailable (outage)")
    if faults.latency_s:
        await asyncio.sleep(faults.latency_s)
    if faults.inject_error():
        return _error(state, 500, "internal server error (injected)")
    try:
        user = state.accounts.authenticate(request.headers.get(hdrs.AUTHORIZATION))
    except AuthError as exc:
        return _error(state, 401, str(exc))
    return await _submit(request, state, user)


async def _submit(request: web.Request, state: SandboxState, user: str | None) -> web.Response:
    try:
        submission = parse_datasend(await request.read())
    except BadRequest as exc:
        return _json(state, 400, {"error": "malformed request", "reasons": exc.reasons})
    if user is not None and submission.user != user:
        return _error(state, 403, "the credentials do not belong to this user")
    now = asyncio.get_running_loop().time()
    wait_s = state.faults.throttle_wait_s(submission.user, len(submission.entries), now)
    if wait_s:
        return _json(state, 429, {"error": "throttled", "retry_after_ms": round(wait_s * 1000)},
                     headers={hdrs.RETRY_AFTER: retry_after_header(wait_s)})
    if submission.sends_to(SERVER_ERROR):
        return _error(state, 500, "internal server error (sandbox test number)")
    if state.faults.poisoned([e.templateid for e in submission.entries
                              if isinstance(e, DatasendRecord)]):
        state.stats.requests_poisoned += 1
        return _json(state, 400, {"error": "malformed request",
                                  "reasons": ["templateid: template not approved"]})
    return await _answer(request, state, state.gateway.answer(submission))


async def _answer(request: web.Request, state: SandboxState,
                  answers: list[wire.Answer]) -> web.Response:
    """The answer to accepted records, spoilt when an answer fault is on."""
    fault = state.faults.take_answer_fault()
    if fault is not AnswerFault.NONE:
        state.stats.answer_faults[fault.value] += 1
    match fault:
        case AnswerFault.LATE:
            await asyncio.sleep(state.faults.late_answer_s)
        case AnswerFault.ERROR_500:
            return _error(state, 500, "internal server error (after accepting the batch)")
        case AnswerFault.RESET:
            _reset(request)
            raise web.HTTPInternalServerError  # never written: the connection is gone
        case AnswerFault.HTML:
            state.stats.responses[200] += 1
            return web.Response(text=HTML_PAGE, content_type="text/html")
        case AnswerFault.HALF:
            answers = answers[:len(answers) // 2]
    if state.faults.lowercase_smsgids:
        answers = [wire.lowercased(answer) for answer in answers]
    return _json(state, 200, answers)


def _reset(request: web.Request) -> None:
    """Reset the connection (RST, no answer): linger 0, then abort."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    by_smsgid = request.query.get("smsgids") in ("1", "true")
    return web.Response(body=orjson.dumps(state.stats_json(by_smsgid=by_smsgid)),
                        content_type="application/json")


async def _show_control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snapshot = state.faults.snapshot(asyncio.get_running_loop().time())
    snapshot["accounts"] = state.accounts.users()  # the users, never their tokens
    return web.Response(body=orjson.dumps(snapshot), content_type="application/json")


async def _control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        change = ControlRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        body = {"error": "malformed control request", "reasons": describe(exc)}
        return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")
    state.faults.apply(change, asyncio.get_running_loop().time())
    for user, token in (change.accounts or {}).items():
        state.accounts.set(user, token)
    knobs = change.model_dump(exclude_none=True, exclude={"accounts"})
    if change.accounts:
        knobs["accounts_set"] = sorted(change.accounts)  # the users, never their tokens
    log.info("sandbox.control", **knobs)
    state.dispatcher.wake()
    return await _show_control(request)
