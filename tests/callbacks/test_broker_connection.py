"""The receiver's broker link: backoff arithmetic and reconnection, on the in-process broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ics_sms.broker.base import Broker, ConnectionLost
from ics_sms.broker.memory import MemoryBroker
from ics_sms.callbacks.link import BrokerLink, reconnect_delay
from ics_sms.schemas.topology import Topology

TOPOLOGY = Topology(namespace="unit.")


@pytest.mark.parametrize(("attempt", "expected"), [(0, 0.2), (1, 0.4), (3, 1.6), (5, 5.0),
                                                   (500, 5.0)])
def test_reconnect_delay_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    assert reconnect_delay(attempt, jitter=lambda: 0.0) == pytest.approx(expected)


def test_jitter_takes_at_most_half_off() -> None:
    assert reconnect_delay(2, jitter=lambda: 1.0) == pytest.approx(0.4)


class Opener:
    """Opens in-process brokers; the first ``failures`` attempts fail."""

    def __init__(self, failures: int = 0) -> None:
        self.url = f"memory://link-{uuid.uuid4().hex[:8]}"
        self.failures = failures
        self.opened: list[MemoryBroker] = []

    async def __call__(self, _retry_s: float) -> Broker:
        if self.failures:
            self.failures -= 1
            raise ConnectionLost("cannot connect (test)")
        broker = MemoryBroker(self.url)
        await broker.connect()
        self.opened.append(broker)
        return broker


async def test_start_connects_and_declares() -> None:
    opener = Opener()
    link = BrokerLink(opener, TOPOLOGY)
    await link.start(0)
    assert link.ready
    assert link.broker is opener.opened[0]
    assert await opener.opened[0].queue_depth(TOPOLOGY.events_queue) == 0  # declared
    await link.close()
    assert not link.ready
    assert opener.opened[0].closed.done()


async def test_start_fails_when_the_broker_cannot_be_opened() -> None:
    link = BrokerLink(Opener(failures=1), TOPOLOGY)
    with pytest.raises(ConnectionLost):
        await link.start(0)
    assert not link.ready


async def test_a_lost_connection_is_replaced_after_failed_attempts() -> None:
    opener = Opener()
    link = BrokerLink(opener, TOPOLOGY, base_delay_s=0.001, max_delay_s=0.001)
    await link.start(0)
    opener.failures = 2
    opener.opened[0].crash()
    await asyncio.wait([opener.opened[0].closed])
    assert not link.ready
    await asyncio.wait_for(link.wait_ready(), timeout=5)
    assert link.broker is opener.opened[1]
    assert (link.reconnects, opener.failures) == (1, 0)
    assert repr(link) == "<BrokerLink ready reconnects=1>"
    await link.close()


async def test_close_while_reconnecting_stops_the_attempts() -> None:
    opener = Opener()
    link = BrokerLink(opener, TOPOLOGY, base_delay_s=60, max_delay_s=60)
    await link.start(0)
    opener.failures = 1_000
    opener.opened[0].crash()
    await asyncio.wait([opener.opened[0].closed])
    await link.close()
    assert not link.ready
    assert "closed" in repr(link)
