"""The worker's door to the fleet-wide rate: batch caps, waiting for the granted moment,
and saying (throttled) when a sender's rate_per_s is what holds messages back."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from ics_sms.schemas.senders import Sender, SenderType
from ics_sms.stores.rates import InMemoryRateStore
from ics_sms.workers.ratelimit import SenderRates


def sender(rate_per_s: float) -> Sender:
    return Sender(name=f"s-{uuid.uuid4().hex[:8]}", type=SenderType.SERVICE_IMPLICIT,
                  sender_id="ACMEIN", username="acme", token=SecretStr("tok-123456"),
                  rate_per_s=rate_per_s)


def paced_lines(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logs if line["event"] == "sender paced by its rate_per_s"]


async def test_waiting_for_the_rate_is_logged_with_the_sender_and_rate() -> None:
    rates = SenderRates(InMemoryRateStore())
    fast = sender(1000)
    with capture_logs() as logs:
        assert (await rates.acquire(fast, 100)).wait_s == 0  # an idle sender: at once
        assert paced_lines(logs) == []
        await rates.acquire(fast, 20)
        await rates.acquire(fast, 20)  # within the interval: counted, not logged
    [line] = paced_lines(logs)
    assert (line["sender"], line["rate_per_s"], line["count"]) == (fast.name, 1000, 20)
    assert line["waited_s"] == pytest.approx(0.1, abs=0.05)


async def test_a_429_is_not_reported_as_pacing() -> None:
    rates = SenderRates(InMemoryRateStore())
    fast = sender(1000)
    await rates.pause(fast, throttled_s=0.05)
    with capture_logs() as logs:
        grant = await rates.acquire(fast, 10)
    assert grant.wait_s == grant.throttled_s > 0
    assert paced_lines(logs) == []


async def test_refused_credentials_return_at_once_with_the_pause_left() -> None:
    rates = SenderRates(InMemoryRateStore())
    slow = sender(1)
    await rates.pause(slow, refused_s=3600)
    grant = await rates.acquire(slow, 1000)  # would wait 1000 s if it were granted
    assert not grant.granted and grant.refused_s == pytest.approx(3600, abs=1)


async def test_pacing_is_information_not_a_warning() -> None:
    # A configured limit doing its job: visible at the default level, not alarming.
    rates = SenderRates(InMemoryRateStore())
    paced = sender(1000)
    with capture_logs() as logs:
        await rates.acquire(paced, 30)
        await rates.acquire(paced, 1)
    assert [line["log_level"] for line in paced_lines(logs)] == ["info"]


@pytest.mark.parametrize(("rate", "cap"), [(0.5, 1), (1, 1), (7.9, 7), (200, 200),
                                          (100_000, 100_000)])
def test_a_batch_costs_at_most_a_second_of_its_senders_rate(rate: float, cap: int) -> None:
    assert SenderRates.batch_cap(sender(rate)) == cap
