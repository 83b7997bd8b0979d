"""The console's aiohttp application: routes, templates, the stores it reads and writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ics_sms.console import dead_letters_pages, pages, senders_pages
from ics_sms.console.security import SESSIONS, LoginLimiter, Sessions, security_middleware
from ics_sms.console.shared import CONSOLE, Console
from ics_sms.console.users import UserError, UserStore
from ics_sms.schemas.settings import Settings
from ics_sms.stores.history import duration_text
from ics_sms.stores.messages import MessageStore
from ics_sms.stores.redis import StoreError
from ics_sms.stores.senders import SenderSource, SenderSourceError

__all__ = ["create_console_app"]

ASSETS = Path(__file__).parent / "web-assets"
"""Templates and static files (a folder name that is no Python package: mypy skips it)."""


def _when(epoch: float | datetime | None) -> str:
    if epoch is None:
        return "-"
    at = epoch if isinstance(epoch, datetime) else datetime.fromtimestamp(epoch, UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    return duration_text(seconds, unknown="unknown (nothing being sent)")


@web.middleware
async def _unavailable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A store that cannot answer (Redis, PostgreSQL, the senders file) is a 503 with the
    reason, not a traceback."""
    try:
        response: web.StreamResponse = await handler(request)
    except (StoreError, SenderSourceError, UserError) as exc:
        raise web.HTTPServiceUnavailable(text=f"unavailable: {exc}") from None
    return response


def create_console_app(settings: Settings, *, senders: SenderSource, messages: MessageStore,
                       users: UserStore, close_stores: bool = True) -> web.Application:
    """The console on these stores; with ``close_stores`` it closes them on shutdown."""
    sessions = Sessions(settings.console_session_s, secure=settings.console_secure_cookie)
    app = web.Application(middlewares=[security_middleware(sessions), _unavailable],
                          client_max_size=64 * 1024)
    app[SESSIONS] = sessions
    app[CONSOLE] = Console(settings, senders, messages, users, sessions, LoginLimiter())
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(ASSETS / "templates"),
        autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["seg"] = lambda text: quote(str(text), safe="")  # one URL path segment
    app.router.add_static("/static/", ASSETS / "static", name="static")
    pages.add_routes(app)
    senders_pages.add_routes(app)
    dead_letters_pages.add_routes(app)

    async def stores(_app: web.Application) -> AsyncIterator[None]:
        yield
        if close_stores:
            await messages.close()
            await asyncio.to_thread(senders.close)
            await asyncio.to_thread(users.close)

    app.cleanup_ctx.append(stores)
    return app
