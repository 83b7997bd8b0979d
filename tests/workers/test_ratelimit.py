"""The token bucket says (throttled) when a sender's rate_per_s is what holds messages back."""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from ics_sms.workers.ratelimit import TokenBucket


def paced_lines(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logs if line["event"] == "sender paced by its rate_per_s"]


def test_waiting_for_the_rate_is_logged_with_the_sender_and_rate() -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    bucket = TokenBucket(rate_per_s=100, name=name)
    with capture_logs() as logs:
        assert bucket.delay_for(100) == 0  # one second's burst: nothing to say
        assert paced_lines(logs) == []
        bucket.delay_for(50)
        bucket.delay_for(50)  # within the interval: counted, not logged
    [line] = paced_lines(logs)
    assert (line["sender"], line["rate_per_s"], line["count"]) == (name, 100, 50)
    assert line["waited_s"] == pytest.approx(0.5, abs=0.05)


def test_a_429_block_is_not_reported_as_pacing() -> None:
    bucket = TokenBucket(rate_per_s=1000, name=f"s-{uuid.uuid4().hex[:8]}")
    bucket.block_for(30.0)
    with capture_logs() as logs:
        bucket.delay_for(1500)
    assert paced_lines(logs) == []


def test_pacing_is_information_not_a_warning() -> None:
    # A configured limit doing its job: visible at the default level, not alarming.
    bucket = TokenBucket(rate_per_s=10, name=f"s-{uuid.uuid4().hex[:8]}")
    with capture_logs() as logs:
        bucket.delay_for(30)
    assert [line["log_level"] for line in paced_lines(logs)] == ["info"]
