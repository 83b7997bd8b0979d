"""Fixtures of the receiver tests: a receiver on a real port, real RabbitMQ, real Redis.

Events are read back from the test namespace's ``sms.events`` queue with ``basic_get``:
the receiver answers 200 only after the broker confirmed, so what a test expects is
already in the queue when the answer arrives; no waiting is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pika
import pytest
from aiohttp.test_utils import TestServer
from redis import Redis

from ics_sms.callbacks.app import create_app
from ics_sms.callbacks.connection import BrokerOpener
from ics_sms.schemas.senders import Sender, Senders, SenderType
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import ContextStore, InMemoryContextStore
from ics_sms.stores.links import InMemoryLinkStore, LinkStore
from ics_sms.stores.messages import MessageStore
from tests.callbacks.receiver_helpers import EventsQueue, Receiver, StartReceiver
from tests.faults import TcpProxy


@pytest.fixture
def sender() -> Sender:
    return Sender(name="acme-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                  username="acme", token="not-a-real-ics-token")


@pytest.fixture
def senders(sender: Sender) -> Senders:
    return Senders().add(sender)


@pytest.fixture
def signer(amqp_settings: Settings) -> SmsgidSigner:
    return SmsgidSigner(amqp_settings.callback_secret.get_secret_value())


@pytest.fixture
async def start_receiver(
    amqp_settings: Settings, senders: Senders, sender: Sender
) -> AsyncIterator[StartReceiver]:
    """Start receivers (settings, store and broker opener can be replaced); all are stopped
    at the end of the test."""
    running: list[Receiver] = []

    async def start(settings: Settings | None = None, *, store: ContextStore | None = None,
                    opener: BrokerOpener | None = None, publish_timeout_s: float = 10.0,
                    links: LinkStore | None = None,
                    messages: MessageStore | None = None) -> Receiver:
        app = create_app(settings or amqp_settings, senders,
                         context_store=store or InMemoryContextStore(),
                         link_store=links or InMemoryLinkStore(), message_store=messages,
                         broker_opener=opener, publish_timeout_s=publish_timeout_s)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        receiver = Receiver(server, aiohttp.ClientSession(), sender.tracking_path())
        running.append(receiver)
        return receiver

    yield start
    for receiver in running:
        await receiver.session.close()
        await receiver.server.close()


@pytest.fixture
async def receiver(start_receiver: StartReceiver) -> Receiver:
    return await start_receiver()


@pytest.fixture
def events_queue(rabbitmq_url: str, topology: Topology) -> EventsQueue:
    return EventsQueue(rabbitmq_url, topology)


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    target = pika.URLParameters(rabbitmq_url)
    tcp = TcpProxy(target.host, target.port)
    await tcp.start()
    yield tcp
    await tcp.cut()


# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test only; the keys the tests write are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = Redis.from_url(redis_url)
    client.delete(*(prefix + m for m in ("m-1", "m-2", "m-3")))
    client.close()
