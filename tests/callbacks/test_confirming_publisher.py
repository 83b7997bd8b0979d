"""Shared confirm windows, on the in-process broker (no RabbitMQ needed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from ics_sms.broker.base import Broker, ConnectionLost, Outgoing, PublishFailed
from ics_sms.broker.memory import MemoryBroker
from ics_sms.callbacks.connection import BrokerConnection
from ics_sms.callbacks.publisher import ConfirmingPublisher, PublishDeadlineExceeded
from ics_sms.schemas.topology import Topology

TOPOLOGY = Topology(namespace="unit.")


class GatedBroker(MemoryBroker):
    """Records each publish call's size; holds calls while ``gate`` is clear."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[int] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.calls.append(len(messages))
        self.called.set()
        await self.gate.wait()
        if self.refuse:
            raise PublishFailed("broker refused (nack) a message")
        await super().publish(messages)


def messages(n: int) -> list[Outgoing]:
    return [Outgoing(TOPOLOGY.events_exchange, "sms.delivered", b"{}") for _ in range(n)]


@pytest.fixture
async def broker() -> GatedBroker:
    return GatedBroker(f"memory://publisher-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def connection(broker: GatedBroker) -> AsyncIterator[BrokerConnection]:
    async def opener() -> Broker:
        await broker.connect()
        return broker

    connection = BrokerConnection(opener, TOPOLOGY)
    await connection.start(0)
    yield connection
    await connection.close()


async def started(connection: BrokerConnection, **options: float) -> ConfirmingPublisher:
    publisher = ConfirmingPublisher(connection, **options)  # type: ignore[arg-type]
    await publisher.start()
    return publisher


async def test_requests_waiting_for_a_window_share_the_next_one(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection, max_windows=1)
    broker.gate.clear()
    first = asyncio.create_task(publisher.publish(messages(3)))
    await broker.called.wait()
    rest = [asyncio.create_task(publisher.publish(messages(n))) for n in (1, 2, 4)]
    await asyncio.sleep(0)  # the three requests queue up behind the first window
    broker.gate.set()
    await asyncio.gather(first, *rest)
    assert broker.calls == [3, 7]
    assert publisher.published == 10
    assert await broker.queue_depth(TOPOLOGY.events_queue) == 10
    await publisher.close()


async def test_a_refused_window_fails_every_request_in_it(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection)
    broker.refuse = True
    results = await asyncio.gather(publisher.publish(messages(1)),
                                   publisher.publish(messages(2)), return_exceptions=True)
    assert all(isinstance(r, PublishFailed) for r in results)
    assert publisher.failed == 3
    await publisher.close()


async def test_no_confirm_in_time_is_a_confirm_timeout(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection, timeout_s=0.05)
    broker.gate.clear()
    with pytest.raises(PublishDeadlineExceeded):
        await publisher.publish(messages(1))
    broker.gate.set()
    await publisher.close()


async def test_a_request_that_gave_up_before_its_window_is_not_sent(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection, max_windows=1)
    broker.gate.clear()
    blocking = asyncio.create_task(publisher.publish(messages(1)))
    await broker.called.wait()
    abandoned = asyncio.create_task(publisher.publish(messages(5)))
    await asyncio.sleep(0)  # queued behind the first window
    abandoned.cancel()
    broker.gate.set()
    await blocking
    await publisher.publish(messages(2))
    assert broker.calls == [1, 2]
    await publisher.close()


async def test_without_a_broker_connection_requests_fail_at_once(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection)
    broker.crash()
    with pytest.raises(ConnectionLost, match="broker unavailable"):
        await publisher.publish(messages(1))
    await publisher.close()


async def test_empty_publish_needs_nothing(
    connection: BrokerConnection, broker: GatedBroker
) -> None:
    publisher = await started(connection)
    await publisher.publish([])
    assert broker.calls == []
    await publisher.close()


async def test_repr_shows_the_state(connection: BrokerConnection) -> None:
    publisher = await started(connection)
    await publisher.publish(messages(2))
    assert repr(publisher).startswith("<ConfirmingPublisher waiting=0 windows=")
    assert repr(publisher).endswith(" published=2 failed=0>")
    await publisher.close()
