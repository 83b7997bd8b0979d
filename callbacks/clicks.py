"""Self-tracked short links: ``GET /l/{code}`` redirects and reports a ``clicked`` event.

The redirect never waits on the broker for longer than ``wait_s``: the event's publish
goes on in the background until the broker confirms it, retrying through broker outages,
and shutdown waits (bounded) for those still pending. A click is lost only if the
receiver process dies while the broker has been unreachable since that click.

A click is reported only for a link that is still bound to its message: the stored
:class:`ShortLink` must carry the code it was found under, and that code must be the
worker's ``HMAC(callback secret, message_id, url)`` (current or previous secret). A link
record that fails this (written by something else, or for another message or URL) is
answered 404, logged without the code, counted as ``ics_sms_receipts_refused{reason=
"unbound_link"}`` and produces no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from aiohttp import web

from ics_sms.backoff import backoff
from ics_sms.broker.base import BrokerError, Outgoing
from ics_sms.broker.codec import event_message
from ics_sms.callbacks.metrics import CLICKS, REFUSED
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.schemas.messages import ReceiptEvent, Status, make_event_id
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology
from ics_sms.stores.links import LinkStore, LinkStoreError, ShortLink
from ics_sms.stores.messages import MessageStore, MessageStoreError
from ics_sms.workers.links import link_code

__all__ = ["ClickRecorder", "LinkViews", "click_event", "is_bound", "link_secrets"]

log = structlog.get_logger(__name__)

_NOT_FOUND = ("<!doctype html><title>Link not found</title><h1>This link is unknown or has "
              "expired.</h1>")
_MAX_USER_AGENT = 512
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 10.0


def link_secrets(settings: Settings) -> list[bytes]:
    """The secrets short-link codes may have been made with (as the worker makes them)."""
    previous = settings.callback_secret_previous
    secrets = [settings.callback_secret, *([previous] if previous else [])]
    return [s.get_secret_value().encode() for s in secrets if s.get_secret_value()]


def is_bound(link: ShortLink, code: str, secrets: Sequence[bytes]) -> bool:
    """Whether ``link``, found under ``code``, is the worker's link of its message and URL."""
    if not hmac.compare_digest(link.code.encode(), code.encode()):
        return False
    valid = False
    for secret in secrets:
        valid |= hmac.compare_digest(link_code(secret, link.message_id, link.url).encode(),
                                     code.encode())
    return valid


def click_event_id(link: ShortLink, count: int) -> str:
    """The event id of the ``count``-th click on ``link`` (each click is an event)."""
    return make_event_id(link.message_id, Status.CLICKED, link.code, count)


def click_event(topology: Topology, link: ShortLink, count: int, user_agent: str | None,
                now: datetime) -> Outgoing:
    event = ReceiptEvent(
        event_id=click_event_id(link, count),
        message_id=link.message_id, campaign_id=link.campaign_id, status=Status.CLICKED,
        occurred_at=now, sender=link.sender, url=link.url, click_count=count,
        user_agent=user_agent[:_MAX_USER_AGENT] if user_agent else None,
        metadata=link.metadata,
    )
    return event_message(topology, event)


class ClickRecorder:
    """Publishes click events in the background, retrying until confirmed; then counts
    each click in its message's record and campaign (best effort: the event is what
    matters, and a click is counted only once its event is safe)."""

    def __init__(self, publisher: ConfirmingPublisher, *, wait_s: float = 0.1,
                 messages: MessageStore | None = None) -> None:
        self._publisher = publisher
        self._wait_s = wait_s
        self._messages = messages
        self._pending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<ClickRecorder pending={len(self._pending)}>"

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def record(self, message: Outgoing,
                     click: tuple[str, str, str] | None = None) -> None:
        """Return once confirmed, or after ``wait_s`` with the publish still going on;
        ``click`` (message_id, url, event_id) is counted once the event is confirmed."""
        task = asyncio.create_task(self._deliver(message, click))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self._wait_s)

    async def _deliver(self, message: Outgoing, click: tuple[str, str, str] | None) -> None:
        attempt = 0
        while True:
            try:
                await self._publisher.publish([message])
            except BrokerError as exc:
                attempt += 1
                delay = backoff(attempt, base_s=_RETRY_BASE_S, cap_s=_RETRY_CAP_S)
                log.warning("click event not confirmed yet; retrying", error=str(exc),
                            retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
            else:
                break
        if click is not None and self._messages is not None:
            try:
                await self._messages.clicked([click])
            except MessageStoreError as exc:
                log.warning("click not counted", reason=str(exc))

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._pending:
            return
        _done, left = await asyncio.wait(set(self._pending), timeout=timeout_s)
        for task in left:
            task.cancel()
        if left:
            log.error("click events not confirmed before shutdown", lost=len(left))


class LinkViews:
    def __init__(self, store: LinkStore, recorder: ClickRecorder, topology: Topology,
                 secrets: Sequence[bytes]) -> None:
        self._store = store
        self._recorder = recorder
        self._topology = topology
        self._secrets = list(secrets)

    async def follow(self, request: web.Request) -> web.StreamResponse:
        """``GET /l/{code}``: 302 to the original URL, or a small 404 page."""
        code = request.match_info["code"]
        try:
            found = await self._store.click(code)
        except LinkStoreError as exc:
            log.warning("link store unavailable", error=str(exc))
            return web.Response(status=503, text="Please try again in a moment.")
        if found is None:
            return web.Response(status=404, text=_NOT_FOUND, content_type="text/html")
        link, count = found
        if not is_bound(link, code, self._secrets):
            log.warning("short link not bound to its message; no click event",
                        message_id=link.message_id, sender=link.sender)
            REFUSED.labels("unbound_link").inc()
            return web.Response(status=404, text=_NOT_FOUND, content_type="text/html")
        message = click_event(self._topology, link, count,
                              request.headers.get("User-Agent"), datetime.now(UTC))
        await self._recorder.record(message,
                                    (link.message_id, link.url, click_event_id(link, count)))
        CLICKS.labels(link.sender).inc()
        raise web.HTTPFound(link.url)
