"""The receiver application: components built here, started and stopped by ``cleanup_ctx``.

Start-up connects to the broker (retrying for ``Settings.connect_retry_s``) and declares
the topology; shut-down (after aiohttp finished the requests in flight) stops the
publisher, closes the context store, then the broker connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from ics_sms.broker.base import Broker
from ics_sms.broker.connect import connect_once
from ics_sms.callbacks.clicks import ClickRecorder, LinkViews, link_secrets
from ics_sms.callbacks.connection import BrokerConnection, BrokerOpener
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.service import ReceiptService
from ics_sms.callbacks.views import ReceiptViews, json_errors
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import ContextStore, open_context_store
from ics_sms.stores.links import LinkStore, open_link_store
from ics_sms.stores.live import LiveSenders, SendersView, as_view
from ics_sms.stores.messages import MessageStore, open_message_store

__all__ = [
    "CONNECTION",
    "PUBLISHER",
    "RECEIPTS_ROUTE",
    "SERVICE",
    "STORE",
    "create_app",
    "make_signer",
]

log = structlog.get_logger(__name__)

CONNECTION = web.AppKey("connection", BrokerConnection)
PUBLISHER = web.AppKey("publisher", ConfirmingPublisher)
SERVICE = web.AppKey("service", ReceiptService)
STORE = web.AppKey("store", ContextStore)

RECEIPTS_ROUTE = "/ics/{token}/receipts"
"""Matches :meth:`ics_sms.schemas.senders.Sender.tracking_path` of every sender."""


def make_signer(settings: Settings) -> SmsgidSigner:
    """The smsgid checker; raises ValueError when no callback secret is set."""
    previous = settings.callback_secret_previous
    return SmsgidSigner(settings.callback_secret.get_secret_value(),
                        [previous.get_secret_value()] if previous else [])


def _default_opener(settings: Settings) -> BrokerOpener:
    async def opener() -> Broker:
        return await connect_once(settings, name="ics-sms receiver")

    return opener


def create_app(
    settings: Settings,
    senders: Senders | SendersView,
    *,
    context_store: ContextStore | None = None,
    link_store: LinkStore | None = None,
    message_store: MessageStore | None = None,
    broker_opener: BrokerOpener | None = None,
    publish_timeout_s: float = 10.0,
) -> web.Application:
    """The receiver. It owns (and closes) ``context_store``, by default the settings' one.

    ``senders`` is read per request: pass a :class:`~ics_sms.stores.live.LiveSenders` (run
    by whoever owns it) for senders that change while the receiver runs, or fixed ones.
    """
    view = as_view(senders)
    signer = make_signer(settings)
    store = context_store if context_store is not None else open_context_store(settings)
    connection = BrokerConnection(broker_opener or _default_opener(settings), settings.topology,
                                  broker=settings.broker_url_redacted)
    publisher = ConfirmingPublisher(connection, timeout_s=publish_timeout_s)
    messages = message_store if message_store is not None else open_message_store(settings)
    service = ReceiptService(settings.topology, store, publisher, messages)
    views = ReceiptViews(view, signer, service, connection, grace_s=settings.senders_grace_s)
    links = link_store if link_store is not None else open_link_store(settings)
    recorder = ClickRecorder(publisher, messages=messages)
    link_views = LinkViews(links, recorder, settings.topology, link_secrets(settings))

    app = web.Application(client_max_size=settings.receiver_max_body_bytes,
                          middlewares=[json_errors(settings.receiver_max_body_bytes)])
    app[CONNECTION] = connection
    app[PUBLISHER] = publisher
    app[SERVICE] = service
    app[STORE] = store
    app.router.add_route("GET", RECEIPTS_ROUTE, views.receipts)
    app.router.add_route("POST", RECEIPTS_ROUTE, views.receipts)
    app.router.add_route("GET", "/l/{code}", link_views.follow)
    app.router.add_route("GET", "/healthz", views.healthz)
    app.router.add_route("GET", "/readyz", views.readyz)

    async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[CONNECTION].start(settings.connect_retry_s)
        yield
        await app[CONNECTION].close()

    async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[PUBLISHER].start()
        yield
        await app[PUBLISHER].close()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[STORE].close()
        await links.close()
        await messages.close()

    async def clicks_ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        await recorder.close()  # before the publisher and the broker go

    app.cleanup_ctx.extend([broker_ctx, publisher_ctx, store_ctx, clicks_ctx])
    if not len(view.current) and not isinstance(view, LiveSenders):  # LiveSenders warns
        log.warning("no senders configured: every receipt request will get 404")
    return app
