"""Helpers of the receiver tests (the fixtures using them are in conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pika
from aiohttp.test_utils import TestServer

from ics_sms.schemas.messages import ReceiptEvent
from ics_sms.schemas.topology import Topology

TS = 1764230400
"""A receipt time (2025-11-27 08:00:00 UTC)."""
ACME = "acme-otp"
"""The name of the ``sender`` fixture (its smsgids are signed for it)."""

@dataclass
class Receiver:
    """A running receiver and an HTTP client for it."""

    server: TestServer
    session: aiohttp.ClientSession
    tracking_path: str

    @property
    def app(self) -> Any:
        return self.server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def post(self, body: object, *, path: str | None = None,
                   **kwargs: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = kwargs.pop("headers", {"Content-Type": "application/json"})
        async with self.session.post(self.url(path or self.tracking_path), data=data,
                                     headers=headers, **kwargs) as response:
            return response.status, orjson.loads(await response.read())

    async def request(self, method: str, path: str | None = None,
                      **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.request(method, self.url(path or self.tracking_path),
                                        **kwargs) as response:
            assert response.content_type == "application/json"
            return response.status, orjson.loads(await response.read())


StartReceiver = Callable[..., Awaitable[Receiver]]


@dataclass
class EventsQueue:
    """The durable ``sms.events`` queue of the test namespace, read with basic_get."""

    url: str
    topology: Topology

    def take(self) -> list[tuple[str, ReceiptEvent]]:
        """Every event now in the queue (routing key, event), removing them."""
        taken = []
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            while True:
                method, _props, body = channel.basic_get(self.topology.events_queue,
                                                         auto_ack=True)
                if method is None:
                    return taken
                taken.append((method.routing_key, ReceiptEvent.model_validate_json(body)))
        finally:
            connection.close()

    def events(self) -> list[ReceiptEvent]:
        return [event for _key, event in self.take()]


def delivered(*smsgids: str, ts: int = TS) -> list[dict[str, Any]]:
    return [{"event": "delivered", "data": [{"ts": ts, "meta": s} for s in smsgids]}]


def via_proxy(rabbitmq_url: str, port: int) -> str:
    params = pika.URLParameters(rabbitmq_url)
    vhost = "%2F" if params.virtual_host == "/" else params.virtual_host
    return (f"amqp://{params.credentials.username}:{params.credentials.password}"
            f"@127.0.0.1:{port}/{vhost}")
