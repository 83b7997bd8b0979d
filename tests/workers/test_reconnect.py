"""The worker's broker connection: replaced after a drop, given up when the worker stops."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from ics_sms.broker.base import Broker, ConnectionLost
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.links import InMemoryLinkStore
from ics_sms.workers.service import Worker
from tests.workers.conftest import SERVICE


class Factory:
    """Opens in-process brokers; after the first, ``failures`` attempts fail first."""

    def __init__(self, url: str, failures: int, stop: asyncio.Event | None = None) -> None:
        self.url = url
        self.failures = failures
        self.stop = stop
        self.opened: list[MemoryBroker] = []
        self.reopened = asyncio.Event()

    async def __call__(self, _settings: Settings) -> Broker:
        if self.opened and self.failures:
            self.failures -= 1
            if self.stop is not None:
                asyncio.get_running_loop().call_soon(self.stop.set)
            raise ConnectionLost("memory broker unreachable (test)")
        broker = MemoryBroker(self.url)
        await broker.connect()
        self.opened.append(broker)
        if len(self.opened) > 1:
            self.reopened.set()
        return broker


@pytest.fixture
def settings(amqp_settings: Settings, namespace: str) -> Settings:
    return amqp_settings.model_copy(update={"broker_url": SecretStr(f"memory://{namespace}")})


def make_worker(settings: Settings, factory: Factory) -> Worker:
    return Worker(settings, Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE}),
                  broker_factory=factory,
                  link_store=InMemoryLinkStore())


async def test_a_dropped_connection_is_replaced_after_failed_attempts(settings: Settings) -> None:
    factory = Factory(settings.broker_url.get_secret_value(), failures=2)
    worker, stop = make_worker(settings, factory), asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(30):
        await worker.ready.wait()
        factory.opened[0].crash()
        await factory.reopened.wait()
        await worker.ready.wait()
    assert (worker.stats.reconnects, factory.failures, len(factory.opened)) == (1, 0, 2)
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_stopping_during_an_outage_ends_the_attempts(settings: Settings) -> None:
    stop = asyncio.Event()
    factory = Factory(settings.broker_url.get_secret_value(), failures=10**6, stop=stop)
    worker = make_worker(settings, factory)
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(30):
        await worker.ready.wait()
        factory.opened[0].crash()
        await task
    assert (worker.stats.reconnects, factory.failures) == (0, 10**6 - 1)
