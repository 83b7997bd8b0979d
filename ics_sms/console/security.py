"""Logins, sessions, CSRF tokens, rate limits and the security headers of every answer.

Sessions live in the console process (a random id in an HttpOnly, SameSite=Strict cookie,
Secure when ``ICS_SMS_CONSOLE_SECURE_COOKIE``): restarting the console logs everyone out.
Every session, a logged-out one too, has a CSRF token that every form carries; a POST
without it (or with another session's) is refused before any handler runs.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ics_sms.console.users import Role

__all__ = [
    "COOKIE",
    "CSP",
    "SESSIONS",
    "LoginLimiter",
    "Session",
    "Sessions",
    "redirect",
    "require_admin",
    "security_middleware",
    "session_of",
]

COOKIE = "ics_console"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
PUBLIC_PATHS = frozenset({"/login"})


@dataclass(slots=True)
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    user: str | None = None
    role: Role | None = None
    expires_at: float = 0.0
    flash: list[str] = field(default_factory=list)
    """Notes for the next page shown (what the last change did)."""

    def __repr__(self) -> str:
        return f"<Session user={self.user} role={self.role}>"

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


class Sessions:
    """Session id -> :class:`Session`, forgotten after ``lifetime_s``."""

    def __init__(self, lifetime_s: float, *, secure: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self.secure = secure
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def __repr__(self) -> str:
        return f"<Sessions open={len(self._by_id)}>"

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is not None and session.expires_at < self._clock():
            del self._by_id[sid]
            return None
        return session

    def new(self) -> tuple[str, Session]:
        now = self._clock()
        for sid in [k for k, s in self._by_id.items() if s.expires_at < now]:
            del self._by_id[sid]
        sid = secrets.token_urlsafe(32)
        session = Session(expires_at=now + self.lifetime_s)
        self._by_id[sid] = session
        return sid, session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def set_cookie(self, response: web.StreamResponse, sid: str) -> None:
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.secure,
                            path="/", max_age=int(self.lifetime_s))


class LoginLimiter:
    """At most ``attempts`` failed logins per client address and per account name in
    ``period_s``; further attempts are refused without checking the password."""

    def __init__(self, attempts: int = 5, period_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.period_s = period_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def __repr__(self) -> str:
        return f"<LoginLimiter keys={len(self._failures)}>"

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] < now - self.period_s:
            failures.popleft()
        return failures

    def retry_after_s(self, *keys: str) -> float:
        """0 when a login may be tried now, else how long to wait."""
        wait = 0.0
        for key in keys:
            failures = self._recent(key)
            if len(failures) >= self.attempts:
                wait = max(wait, failures[0] + self.period_s - self._clock())
        return wait

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._recent(key).append(self._clock())

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


SESSIONS = web.AppKey("console_sessions", Sessions)
_SESSION = web.RequestKey("console_session", Session)
"""The session of the request (the middleware sets it)."""


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def session_of(request: web.Request) -> Session:
    """The session of this request (the middleware made sure there is one)."""
    return request[_SESSION]


def require_admin(request: web.Request) -> Session:
    session = session_of(request)
    if not session.admin:
        raise web.HTTPForbidden(text="your account may look but not change this (admin "
                                     "role needed)")
    return session


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def security_middleware(sessions: Sessions) -> Any:
    """Headers on every answer; a session (and its CSRF token) for every request; a login
    for every page but the login page and the static files; a valid CSRF token on every
    POST."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _guarded(request, handler, sessions)
        except web.HTTPException as exc:
            _decorate(request, exc)
            raise
        _decorate(request, response)
        if sessions.secure:  # served behind TLS: browsers keep to https
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return middleware


def _decorate(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


async def _guarded(request: web.Request, handler: Handler,
                   sessions: Sessions) -> web.StreamResponse:
    if request.path.startswith("/static/"):
        return await handler(request)
    sid = request.cookies.get(COOKIE)
    session = sessions.get(sid)
    fresh = session is None
    if session is None:
        sid, session = sessions.new()
    request[_SESSION] = session
    if request.method == "POST":
        form = await request.post()
        token = form.get("csrf")
        if fresh or not isinstance(token, str) or not hmac.compare_digest(token,
                                                                           session.csrf):
            raise web.HTTPForbidden(text="refused: the form's CSRF token is missing or "
                                         "stale; reload the page and try again")
    if session.user is None and request.path not in PUBLIC_PATHS:
        if request.method != "GET":
            raise web.HTTPForbidden(text="refused: log in first")
        response: web.StreamResponse = redirect("/login")
    else:
        response = await handler(request)
    if fresh:
        assert sid is not None
        sessions.set_cookie(response, sid)
    return response
