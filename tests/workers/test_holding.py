"""The holding bound: no sender's held messages outlive the broker's consumer timeout."""

from __future__ import annotations

import pytest

from ics_sms.schemas.senders import Lane
from ics_sms.workers.holding import SAFE_SHARE, HoldBound
from tests.workers.conftest import PROMO, SERVICE

RABBITMQ_DEFAULT = HoldBound(consumer_timeout_s=1800)


def test_a_sender_holds_what_it_sends_in_half_the_consumer_timeout() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 0.5})
    assert SAFE_SHARE == 0.5 and RABBITMQ_DEFAULT.safe_s == 900
    assert RABBITMQ_DEFAULT.per_sender(slow) == 450  # 450 messages take 900 s at 0.5/s
    assert RABBITMQ_DEFAULT.per_sender(PROMO) == 100_000 * 900


def test_even_the_slowest_sender_holds_one_message() -> None:
    glacial = PROMO.model_copy(update={"rate_per_s": 0.0001})
    assert RABBITMQ_DEFAULT.per_sender(glacial) == 1


@pytest.mark.parametrize(("rates", "configured", "expected"), [
    ((100.0,), 1000, 1000),           # fast lane: the configured prefetch stands
    ((0.5,), 1000, 450),              # one slow sender: what it sends in 900 s
    ((0.5, 0.5), 1000, 900),          # the lane's senders together
    ((0.0001,), 1000, 1),             # never below one
])
def test_lane_prefetch_is_capped_by_what_the_lanes_senders_send(
        rates: tuple[float, ...], configured: int, expected: int) -> None:
    senders = [PROMO.model_copy(update={"name": f"p{i}", "rate_per_s": rate})
               for i, rate in enumerate(rates)]
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.PROMOTIONAL, senders, configured) == expected


def test_other_lanes_and_disabled_senders_do_not_count() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 0.5})
    off = PROMO.model_copy(update={"name": "off", "rate_per_s": 1000.0, "disabled": "paused"})
    fast_service = SERVICE.model_copy(update={"rate_per_s": 1000.0})
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.PROMOTIONAL, [slow, off, fast_service],
                                          1000) == 450
    assert RABBITMQ_DEFAULT.lane_prefetch(Lane.SERVICE, [slow, off], 2000) == 2000  # none


def test_a_parked_message_comes_back_once_what_is_held_is_about_sent() -> None:
    slow = PROMO.model_copy(update={"rate_per_s": 2.0})
    assert RABBITMQ_DEFAULT.park_s(slow, 20) == 10.0
    assert RABBITMQ_DEFAULT.park_s(slow, 1) == 1.0          # the shortest delay tier
    assert RABBITMQ_DEFAULT.park_s(slow, 1800) == 300.0     # the longest delay tier
