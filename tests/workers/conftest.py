"""Fixtures for worker tests: a scriptable fake ICS, a running worker, an event reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from ics_sms.broker.base import Broker, Delivery
from ics_sms.broker.codec import send_message
from ics_sms.broker.connect import open_broker
from ics_sms.schemas.messages import ReceiptEvent, SendRequest
from ics_sms.schemas.senders import Lane, Sender, Senders, SenderType
from ics_sms.schemas.settings import Settings
from ics_sms.stores.links import LinkStore
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.messages import MessageStore
from ics_sms.workers.service import Worker
from ics_sms.workers.window import Clock

SERVICE = Sender(name="otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                 username="acme", token=SecretStr("tok-service-123456"),
                 dlt_entity_id="1201159100000000000", rate_per_s=100_000)
PROMO = Sender(name="promo", type=SenderType.PROMOTIONAL, sender_id="512345",
               username="acme", token=SecretStr("tok-promo-123456"),
               dlt_entity_id="1201159100000000000", rate_per_s=100_000)


def request(i: int, **fields: Any) -> SendRequest:
    data: dict[str, Any] = {"message_id": f"m{i}", "campaign_id": "c1",
                            "to": "+447700900123", "text": f"hello {i}"}
    data.update(fields)
    return SendRequest.model_validate(data)


@dataclass
class FakeIcs:
    """Answers /datasend from a script: a list of responders used in turn (last repeats)."""

    responders: list[Callable[[dict[str, Any]], web.Response]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0
    """How long ICS takes to answer, after it took the request (a timeout: it accepted)."""
    hold: asyncio.Event | None = None
    """When given, every answer waits until it is set (after the request was taken)."""

    async def handle(self, http: web.Request) -> web.Response:
        body = orjson.loads(await http.read())
        self.requests.append(body)
        self.auth.append(http.headers.get("Authorization", ""))
        if self.hold is not None:
            await self.hold.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        index = min(len(self.requests) - 1, len(self.responders) - 1)
        responder = self.responders[index] if self.responders else accept_all
        return responder(body)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for req in self.requests for r in req["smstosend"]]


def accept_all(body: dict[str, Any]) -> web.Response:
    answers = [{"to": r["to"], "from": r["from"], "mid": f"mid-{r['smsgid']}",
                "smsgid": r["smsgid"]} for r in body["smstosend"]]
    return web.json_response(answers)


def status(code: int, headers: dict[str, str] | None = None) -> Callable[..., web.Response]:
    return lambda _body: web.json_response({"error": "scripted"}, status=code, headers=headers)


@contextlib.asynccontextmanager
async def serving(fake: FakeIcs) -> AsyncIterator[FakeIcs]:
    """``fake`` answering /datasend on a free local port (its ``url``) while inside."""
    app = web.Application()
    app.router.add_post("/datasend", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def fake_ics() -> AsyncIterator[FakeIcs]:
    async with serving(FakeIcs()) as fake:
        yield fake


@pytest.fixture(params=["rabbitmq", "memory"])
def worker_settings(request: pytest.FixtureRequest, amqp_settings: Settings, fake_ics: FakeIcs,
                    namespace: str) -> Settings:
    """The same worker suite on real RabbitMQ and on the embedded broker."""
    broker = {"broker_url": SecretStr(f"memory://{namespace}")} if request.param == "memory" else {}
    return amqp_settings.model_copy(update={**broker,
        "ics_url": fake_ics.url, "linger_ms": 5.0, "backoff_base_s": 0.01,
        "backoff_cap_s": 0.02, "max_attempts": 3,
    })


class Pipeline:
    """A broker connection for the test: publish requests, read events and dead letters."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.topology = settings.topology
        self.broker = broker
        self.events: asyncio.Queue[ReceiptEvent] = asyncio.Queue()
        self.dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def publish(self, *requests: SendRequest, lane: Lane = Lane.SERVICE,
                      headers: dict[str, Any] | None = None,
                      publish_id: str | None = None) -> None:
        """Publish ``requests``, each as a new publish unless ``publish_id`` names the
        publish they repeat (what a redelivery of that publish looks like)."""
        await self.broker.publish([send_message(self.topology, r, lane, headers, publish_id)
                                   for r in requests])

    async def publish_raw(self, body: bytes, lane: Lane = Lane.SERVICE) -> None:
        from ics_sms.broker.base import Outgoing

        await self.broker.publish([Outgoing(self.topology.send_exchange,
                                            self.topology.send_routing_key(lane), body)])

    async def start_reading(self) -> None:
        def on_event(delivery: Delivery) -> None:
            self.events.put_nowait(ReceiptEvent.model_validate_json(delivery.body))
            self.broker.ack(delivery)

        def on_dead(delivery: Delivery) -> None:
            self.dead.put_nowait(delivery)
            self.broker.ack(delivery)

        await self.broker.consume(self.topology.events_queue, 1000, on_event)
        await self.broker.consume(self.topology.dead_queue, 1000, on_dead)

    async def next_events(self, count: int, timeout_s: float = 20) -> list[ReceiptEvent]:
        async with asyncio.timeout(timeout_s):
            return [await self.events.get() for _ in range(count)]

    async def next_dead(self, count: int, timeout_s: float = 20) -> list[Delivery]:
        async with asyncio.timeout(timeout_s):
            return [await self.dead.get() for _ in range(count)]


@contextlib.asynccontextmanager
async def open_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    """A :class:`Pipeline` on the settings' broker, topology declared, events being read."""
    broker = await open_broker(settings, name="test pipeline")
    try:
        await broker.declare(settings.topology)
        pipe = Pipeline(settings, broker)
        await pipe.start_reading()
        yield pipe
    finally:
        await broker.close()


@pytest.fixture
async def pipeline(worker_settings: Settings) -> AsyncIterator[Pipeline]:
    async with open_pipeline(worker_settings) as pipe:
        yield pipe


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, senders: Senders | LiveSenders | None = None,
                         clock: Clock | None = None,
                         link_store: LinkStore | None = None,
                         message_store: MessageStore | None = None) -> AsyncIterator[Worker]:
    senders = senders or Senders(default=SERVICE.name,
                                 senders={SERVICE.name: SERVICE, PROMO.name: PROMO})
    worker = Worker(settings, senders, link_store=link_store, message_store=message_store,
                    **({"clock": clock} if clock else {}))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(10):
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()
    try:
        yield worker
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def fixed_clock(moment: datetime) -> Clock:
    return lambda: moment
