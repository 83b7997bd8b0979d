"""The one reconnect loop: retries with backoff, a budget, a stop, one log line per failure."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from structlog.testing import capture_logs

from ics_sms.broker.base import Broker, ConnectionLost, TopologyConflict
from ics_sms.broker.connect import connect_with_backoff
from ics_sms.broker.memory import MemoryBroker

URL = "amqp://guest:***@broker.example/"


class Attempts:
    """Fails with ``error`` ``failures`` times, then opens an in-process broker."""

    def __init__(self, failures: int, error: Exception | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionLost("cannot connect to amqp://guest:***@broker/")
        self.stop = stop
        self.calls = 0

    async def __call__(self) -> Broker:
        self.calls += 1
        if self.calls <= self.failures:
            if self.stop is not None:  # set while the loop waits out its backoff
                asyncio.get_running_loop().call_soon(self.stop.set)
            raise self.error
        broker = MemoryBroker(f"memory://connect-{uuid.uuid4().hex[:8]}")
        await broker.connect()
        return broker


async def test_retries_until_the_broker_answers_logging_each_failure_once() -> None:
    attempts = Attempts(failures=3)
    with capture_logs() as logs:
        broker = await connect_with_backoff(attempts, broker=URL, base_s=0.001, cap_s=0.001)
    assert broker.is_open
    assert attempts.calls == 4
    assert [(e["event"], e["broker"], e["failures"]) for e in logs] == [
        ("broker unreachable, retrying", URL, n) for n in (1, 2, 3)]
    await broker.close()


async def test_a_budget_of_zero_makes_one_attempt() -> None:
    attempts = Attempts(failures=1)
    with pytest.raises(ConnectionLost, match=r"broker amqp://guest:\*\*\*@broker.example/ "
                                             r"unreachable after 0s: cannot connect"):
        await connect_with_backoff(attempts, broker=URL, retry_s=0)
    assert attempts.calls == 1


async def test_the_budget_ends_the_attempts() -> None:
    attempts = Attempts(failures=10**6)
    with pytest.raises(ConnectionLost, match=r"unreachable after 0\.05s"):
        await connect_with_backoff(attempts, broker=URL, retry_s=0.05, base_s=0.01, cap_s=0.01,
                                   rng=random.Random(1))
    assert 1 < attempts.calls < 10**6


async def test_stop_ends_the_attempts_without_waiting_out_the_backoff() -> None:
    stop = asyncio.Event()
    attempts = Attempts(failures=1, stop=stop)
    broker = await asyncio.wait_for(
        connect_with_backoff(attempts, broker=URL, stop=stop, base_s=3600, cap_s=3600), 30)
    assert broker is None
    assert attempts.calls == 1


async def test_errors_not_worth_a_retry_pass_through_at_once() -> None:
    attempts = Attempts(failures=5, error=TopologyConflict("queue exists with other arguments"))
    with pytest.raises(TopologyConflict):
        await connect_with_backoff(attempts, broker=URL)
    assert attempts.calls == 1


async def test_which_errors_are_retried_is_the_callers_choice() -> None:
    attempts = Attempts(failures=2, error=TopologyConflict("queue exists with other arguments"))
    broker = await connect_with_backoff(attempts, broker=URL, retry_on=(TopologyConflict,),
                                        base_s=0.001, cap_s=0.001)
    assert attempts.calls == 3
    await broker.close()
