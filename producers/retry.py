"""How long the producer keeps trying to reach the broker: a bounded policy, pure data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` reconnections per operation, sleeping a growing interval.

    The n-th wait is ``interval_start_s + n * interval_step_s``, capped at
    ``interval_max_s`` (the same shape as kombu's ``ensure``/``retry_policy``).
    """

    max_retries: int = 10
    interval_start_s: float = 0.5
    interval_step_s: float = 1.0
    interval_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if min(self.interval_start_s, self.interval_step_s, self.interval_max_s) < 0:
            raise ValueError("retry intervals must not be negative")

    def intervals(self) -> list[float]:
        """The waits between attempts, in order."""
        return [
            min(self.interval_start_s + n * self.interval_step_s, self.interval_max_s)
            for n in range(self.max_retries)
        ]

    @property
    def budget_s(self) -> float:
        """Total time spent waiting when every retry fails."""
        return sum(self.intervals())

    @classmethod
    def within(cls, budget_s: float, *, interval_start_s: float = 0.5,
               interval_step_s: float = 1.0, interval_max_s: float = 5.0) -> RetryPolicy:
        """The fewest retries whose waits add up to at least ``budget_s`` (0 → no retry)."""
        if budget_s > 0 and (interval_max_s <= 0 or interval_start_s + interval_step_s <= 0):
            raise ValueError("intervals of zero never use up a retry budget")
        retries, waited = 0, 0.0
        while waited < budget_s:
            waited += min(interval_start_s + retries * interval_step_s, interval_max_s)
            retries += 1
        return cls(retries, interval_start_s, interval_step_s, interval_max_s)

    def kombu_options(self) -> dict[str, Any]:
        """Keyword arguments of kombu's ``ensure``/``ensure_connection``."""
        return {
            "max_retries": self.max_retries,
            "interval_start": self.interval_start_s,
            "interval_step": self.interval_step_s,
            "interval_max": self.interval_max_s,
        }
