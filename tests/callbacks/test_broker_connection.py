"""The receiver's broker connection: reconnection, on the in-process broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ics_sms.broker.base import Broker, ConnectionLost, TopologyConflict
from ics_sms.broker.memory import MemoryBroker
from ics_sms.callbacks.connection import BrokerConnection
from ics_sms.schemas.topology import Topology

TOPOLOGY = Topology(namespace="unit.")


class Opener:
    """Opens in-process brokers; the first ``failures`` attempts fail."""

    def __init__(self, failures: int = 0) -> None:
        self.url = f"memory://connection-{uuid.uuid4().hex[:8]}"
        self.failures = failures
        self.opened: list[MemoryBroker] = []

    async def __call__(self) -> Broker:
        if self.failures:
            self.failures -= 1
            raise ConnectionLost("cannot connect (test)")
        broker = MemoryBroker(self.url)
        await broker.connect()
        self.opened.append(broker)
        return broker


class ConflictingBroker(MemoryBroker):
    async def declare(self, topology: Topology) -> None:
        raise TopologyConflict("queue exists with other arguments (test)")


async def test_start_connects_and_declares() -> None:
    opener = Opener()
    connection = BrokerConnection(opener, TOPOLOGY)
    await connection.start(0)
    assert connection.ready
    assert connection.broker is opener.opened[0]
    assert await opener.opened[0].queue_depth(TOPOLOGY.events_queue) == 0  # declared
    await connection.close()
    assert not connection.ready
    assert opener.opened[0].closed.done()


async def test_start_fails_when_the_broker_cannot_be_opened() -> None:
    connection = BrokerConnection(Opener(failures=1), TOPOLOGY, broker="amqp://h/")
    with pytest.raises(ConnectionLost, match="broker amqp://h/ unreachable"):
        await connection.start(0)
    assert not connection.ready
    assert connection.reason == "cannot connect (test)"


async def test_start_retries_within_its_budget() -> None:
    opener = Opener(failures=2)
    connection = BrokerConnection(opener, TOPOLOGY, base_delay_s=0.001, max_delay_s=0.001)
    await connection.start(60)
    assert connection.broker is opener.opened[0]
    await connection.close()


async def test_a_topology_conflict_at_start_is_not_retried() -> None:
    async def opener() -> Broker:
        broker = ConflictingBroker(f"memory://conflict-{uuid.uuid4().hex[:8]}")
        await broker.connect()
        return broker

    connection = BrokerConnection(opener, TOPOLOGY)
    with pytest.raises(TopologyConflict):
        await connection.start(60)


async def test_a_lost_connection_is_replaced_after_failed_attempts() -> None:
    opener = Opener()
    connection = BrokerConnection(opener, TOPOLOGY, base_delay_s=0.001, max_delay_s=0.001)
    await connection.start(0)
    opener.failures = 2
    opener.opened[0].crash()
    await asyncio.wait([opener.opened[0].closed])
    assert not connection.ready
    await asyncio.wait_for(connection.wait_ready(), timeout=5)
    assert connection.broker is opener.opened[1]
    assert (connection.reconnects, opener.failures) == (1, 0)
    assert repr(connection) == "<BrokerConnection ready reconnects=1>"
    await connection.close()


async def test_close_while_reconnecting_stops_the_attempts() -> None:
    opener = Opener()
    connection = BrokerConnection(opener, TOPOLOGY, base_delay_s=60, max_delay_s=60)
    await connection.start(0)
    opener.failures = 1_000
    opener.opened[0].crash()
    await asyncio.wait([opener.opened[0].closed])
    await connection.close()
    assert not connection.ready
    assert "closed" in repr(connection)
