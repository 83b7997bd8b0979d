"""Per-message happenings become at most one log line per key and interval, with counts."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from ics_sms.workers.notices import ThrottledLog

KEY = (("sender", "acme"), ("reason", "dlt_missing"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_first_occurrence_is_logged_at_once(clock: Clock) -> None:
    notices = ThrottledLog("messages dead-lettered", clock=clock)
    with capture_logs() as logs:
        notices.note(KEY, 3, example="dlt_template_id is required")
    assert logs == [{"event": "messages dead-lettered", "log_level": "warning",
                     "sender": "acme", "reason": "dlt_missing", "count": 3,
                     "example": "dlt_template_id is required"}]


def test_later_occurrences_wait_for_the_interval_and_are_counted(clock: Clock) -> None:
    notices = ThrottledLog("paced", amount_field="waited_s", interval_s=10, clock=clock)
    with capture_logs() as logs:
        notices.note(KEY, 1, amount=0.5)
        for _ in range(99):
            clock.now += 0.09
            notices.note(KEY, 10, amount=0.25)
        clock.now += 2
        notices.note(KEY, 10, amount=0.25)
    assert [line["count"] for line in logs] == [1, 1000]
    assert logs[1]["waited_s"] == pytest.approx(25.0)
    assert logs[1]["since_s"] == pytest.approx(10.9)


def test_each_key_has_its_own_interval(clock: Clock) -> None:
    notices = ThrottledLog("messages dead-lettered", clock=clock)
    other = (("sender", "acme"), ("reason", "expired"))
    with capture_logs() as logs:
        notices.note(KEY)
        notices.note(other)
        notices.note(KEY)
    assert [(line["reason"], line["count"]) for line in logs] == [("dlt_missing", 1),
                                                                 ("expired", 1)]


def test_flush_logs_what_is_left(clock: Clock) -> None:
    notices = ThrottledLog("messages dead-lettered", clock=clock)
    with capture_logs() as logs:
        notices.note(KEY)
        notices.note(KEY, 4)
        notices.flush()
        notices.flush()  # nothing new: no line
    assert [line["count"] for line in logs] == [1, 4]


async def test_a_timer_logs_the_rest_when_occurrences_stop(clock: Clock) -> None:
    notices = ThrottledLog("messages dead-lettered", interval_s=10, clock=clock)
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        notices.note(KEY)
        clock.now += 4
        notices.note(KEY, 2)
        [timer] = [t.timer for t in notices._tallies.values() if t.timer is not None]
        assert timer.when() - loop.time() == pytest.approx(6, abs=0.5)
        notices.note(KEY, 3)  # one timer per key, however many notes
        notices._on_timer(KEY)  # what the loop runs when the timer is due
    assert [line["count"] for line in logs] == [1, 5]
