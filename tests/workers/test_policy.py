"""Retry policy, what ICS answers mean, the promotional window, the rate limit."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time

import pytest

from ics_sms.workers.policy import (
    VERDICT_STATUSES,
    AttemptPolicy,
    Disposition,
    classify_http_status,
)
from ics_sms.workers.submit import SenderState
from ics_sms.workers.window import PromoWindow


@pytest.mark.parametrize(("status", "html", "disposition"), [
    # ICS may have accepted some or all records: the answer was lost, not a refusal
    (500, False, Disposition.UNCERTAIN),
    (502, True, Disposition.UNCERTAIN),  # a gateway's page: ICS may have taken the request
    (503, False, Disposition.RETRY),  # unavailable: ICS took nothing
    (504, True, Disposition.UNCERTAIN),
    (200, False, Disposition.UNCERTAIN),  # only asked for a 200 whose body is unreadable
    (200, True, Disposition.UNCERTAIN),
    (202, False, Disposition.UNCERTAIN),
    # ICS did not take the request
    (408, False, Disposition.RETRY),
    (425, False, Disposition.RETRY),
    (404, False, Disposition.RETRY),  # a proxy or a wrong URL: no verdict on the messages
    (404, True, Disposition.RETRY),
    (405, False, Disposition.RETRY),
    (407, True, Disposition.RETRY),
    (302, False, Disposition.RETRY),
    (400, True, Disposition.RETRY),  # a proxy's HTML 400 is not ICS's verdict
    (413, True, Disposition.RETRY),
    # slow down / credentials
    (429, False, Disposition.THROTTLED),
    (429, True, Disposition.THROTTLED),
    (401, False, Disposition.PAUSE_SENDER),
    (403, False, Disposition.PAUSE_SENDER),
    # ICS's verdict on the request (the submitter splits it to find the bad records)
    (400, False, Disposition.REJECT),
    (413, False, Disposition.REJECT),
    (422, False, Disposition.REJECT),
])
def test_what_an_answer_means(status: int, html: bool, disposition: Disposition) -> None:
    assert classify_http_status(status, html=html) is disposition


def test_a_verdict_is_what_ics_says_about_the_request() -> None:
    assert {s for s in range(100, 600)
            if classify_http_status(s) is Disposition.REJECT} == VERDICT_STATUSES


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = AttemptPolicy(max_attempts=10, base_s=1.0, cap_s=30.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (20, 30)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert max(delays) <= ceiling
        assert min(delays) >= ceiling / 2
        assert len(set(delays)) > 1  # jitter spreads a herd


def test_every_retry_path_ends() -> None:
    policy = AttemptPolicy(max_attempts=3)
    assert [policy.exhausted(a) for a in (1, 2, 3, 4)] == [False, False, True, True]


IST_WINDOW = PromoWindow.of(time(9), time(21), "Asia/Kolkata")


@pytest.mark.parametrize(("utc", "is_open"), [
    (datetime(2026, 11, 27, 3, 29, tzinfo=UTC), False),  # 08:59 IST
    (datetime(2026, 11, 27, 3, 30, tzinfo=UTC), True),  # 09:00 IST
    (datetime(2026, 11, 27, 15, 29, tzinfo=UTC), True),  # 20:59 IST
    (datetime(2026, 11, 27, 15, 30, tzinfo=UTC), False),  # 21:00 IST
])
def test_promotional_window_in_india(utc: datetime, is_open: bool) -> None:
    assert IST_WINDOW.is_open(utc) is is_open


def test_seconds_until_the_window_opens() -> None:
    evening = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # 21:00 IST
    assert IST_WINDOW.seconds_until_change(evening) == 12 * 3600


def test_window_across_midnight() -> None:
    night = PromoWindow.of(time(22), time(6), "UTC")
    assert night.is_open(datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert night.is_open(datetime(2026, 1, 1, 5, tzinfo=UTC))
    assert not night.is_open(datetime(2026, 1, 1, 12, tzinfo=UTC))


def test_a_window_that_starts_where_it_ends_is_always_open() -> None:
    always = PromoWindow.of(time(0), time(0), "Asia/Kolkata")
    assert always.is_open(datetime(2026, 1, 1, 20, tzinfo=UTC))


def test_a_sender_state_shows_a_pause_the_fleet_was_not_told_yet() -> None:
    state = SenderState()
    assert repr(state) == "<SenderState refused=False unshared_pause_s=0>"
    state.unshared_pause_s = 60.0
    assert repr(state) == "<SenderState refused=False unshared_pause_s=60>"
    assert (state.take_pause(), state.take_pause()) == (60.0, 0.0)  # told once
