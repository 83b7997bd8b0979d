"""What the console's pages share: the :class:`Console` (settings, stores, sessions) under
:data:`CONSOLE` in the application, and :func:`render`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ics_sms.console.security import LoginLimiter, Sessions, session_of
from ics_sms.console.users import UserStore
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import MessageStore
from ics_sms.stores.senders import SenderSource

__all__ = ["CONSOLE", "Console", "render"]


@dataclass
class Console:
    """What the views share: settings, stores, sessions."""

    settings: Settings
    senders: SenderSource
    messages: MessageStore
    users: UserStore
    sessions: Sessions
    limiter: LoginLimiter

    def __repr__(self) -> str:
        return f"<Console senders={self.senders!r} users={self.users!r}>"

    async def blocking(self, work: Callable[[], Any]) -> Any:
        """Run a call of a synchronous store (file, PostgreSQL) off the event loop."""
        return await asyncio.to_thread(work)


CONSOLE = web.AppKey("console", Console)


def render(request: web.Request, template: str, context: dict[str, Any],
           status: int = 200) -> web.Response:
    """``template`` with what every page needs: the user, the CSRF token, the nav."""
    session = session_of(request)
    base = {"session": session, "csrf": session.csrf, "path": request.path}
    return aiohttp_jinja2.render_template(template, request, {**base, **context},
                                          status=status)
