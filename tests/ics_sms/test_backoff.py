"""The one backoff formula: growth, cap, jitter range, clamped attempts, reproducibility."""

from __future__ import annotations

import random

import pytest

from ics_sms.backoff import backoff


class Fixed(random.Random):
    """A generator whose ``random()`` always returns ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("attempt", "step"), [(1, 0.2), (2, 0.4), (4, 1.6), (6, 5.0),
                                               (500, 5.0)])
def test_the_step_doubles_from_the_base_up_to_the_cap(attempt: int, step: float) -> None:
    assert backoff(attempt, base_s=0.2, cap_s=5.0, rng=Fixed(0.0)) == pytest.approx(step / 2)
    assert backoff(attempt, base_s=0.2, cap_s=5.0, rng=Fixed(1.0)) == pytest.approx(step)


def test_jitter_spreads_waits_between_half_and_all_of_the_step() -> None:
    rng = random.Random(7)
    for attempt, step in [(1, 1.0), (3, 4.0), (6, 30.0), (40, 30.0)]:
        waits = [backoff(attempt, base_s=1.0, cap_s=30.0, rng=rng) for _ in range(500)]
        assert step / 2 <= min(waits) <= max(waits) <= step
        assert len(set(waits)) > 400  # a herd of clients spreads out


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_attempts_below_one_count_as_the_first(attempt: int) -> None:
    assert backoff(attempt, base_s=0.5, cap_s=9.0, rng=Fixed(1.0)) == 0.5


@pytest.mark.parametrize("attempt", [10**3, 10**9, 10**30])
def test_huge_attempts_stay_at_the_cap_without_overflow(attempt: int) -> None:
    assert backoff(attempt, base_s=1.0, cap_s=300.0, rng=Fixed(1.0)) == 300.0


def test_a_seeded_generator_gives_the_same_waits() -> None:
    first = [backoff(n, base_s=1.0, cap_s=60.0, rng=random.Random(42)) for n in range(1, 12)]
    again = [backoff(n, base_s=1.0, cap_s=60.0, rng=random.Random(42)) for n in range(1, 12)]
    assert first == again


def test_without_a_generator_the_wait_is_still_in_range() -> None:
    assert 1.5 <= backoff(2, base_s=2.0, cap_s=3.0) <= 3.0
