"""Retry policy as data: what is transient, and how long to wait before the next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from ics_sms.backoff import backoff

__all__ = ["MAX_PARKS", "AttemptPolicy", "Disposition", "classify_http_status"]

MAX_PARKS = 1440
"""A message parked this often (paused sender, throttling) fails instead of cycling on."""


class Disposition(Enum):
    """What to do with the messages of an ICS answer that was not a per-record 200."""

    RETRY = "retry"  # transient: try again later, counts as an attempt
    THROTTLED = "throttled"  # 429: wait (Retry-After) and slow the sender; not an attempt
    PAUSE_SENDER = "pause_sender"  # 401/403: credentials; park the sender's messages
    REJECT = "reject"  # other 4xx: permanent for these messages
    UNCERTAIN = "uncertain"  # ICS may have accepted some or all records: never resend


def classify_http_status(status: int) -> Disposition:
    """Network errors and timeouts are RETRY too; they never reach this function."""
    if status == 429:
        return Disposition.THROTTLED
    if status in (401, 403):
        return Disposition.PAUSE_SENDER
    if status >= 500 or status in (408, 425):
        return Disposition.RETRY
    return Disposition.REJECT


@dataclass(frozen=True, slots=True)
class AttemptPolicy:
    """How many ICS attempts a message gets and how long it waits between them.

    Capped exponential backoff with jitter; ``max_attempts`` bounds every path. (The
    producer's :class:`~ics_sms.producers.retry.RetryPolicy` is about reconnecting.)
    """

    max_attempts: int = 10
    base_s: float = 1.0
    cap_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return backoff(attempt, base_s=self.base_s, cap_s=self.cap_s, rng=rng)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
