"""Retry policy as data: what is transient, and how long to wait before the next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from ics_sms.backoff import backoff

__all__ = [
    "MAX_PARKS",
    "VERDICT_STATUSES",
    "AttemptPolicy",
    "Disposition",
    "classify_http_status",
]

MAX_PARKS = 1440
"""A message parked this often (paused sender, throttling) fails instead of cycling on."""


class Disposition(Enum):
    """What to do with the records of an ICS call that got no per-record answer for them."""

    RETRY = "retry"  # ICS certainly did not take them: try again later, counts as an attempt
    UNCERTAIN = "uncertain"  # ICS may have accepted some or all of them: never resend blindly
    THROTTLED = "throttled"  # 429: wait (Retry-After) and slow the sender; not an attempt
    PAUSE_SENDER = "pause_sender"  # 401/403: credentials; park the sender's messages
    REJECT = "reject"  # ICS's verdict on the request: permanent for its records


UNAVAILABLE = 503
"""ICS (or its load balancer) says it cannot take requests now: it took nothing, retry."""

VERDICT_STATUSES = frozenset({400, 413, 422})
"""Statuses with which ICS judges the request itself (its body): the only ones that REJECT,
and only when the body is ICS's, not a proxy's HTML page."""


def classify_http_status(status: int, *, html: bool = False) -> Disposition:
    """What an HTTP answer other than a readable 200 means for the records it carried.

    ``html`` says the body is an HTML page: something in front of ICS (a proxy, a load
    balancer, a captive portal) wrote it, so it is no verdict on the messages.

    ========================================  ================
    answer                                    disposition
    ========================================  ================
    2xx (a 200 with an unreadable body)       UNCERTAIN
    5xx (ICS or a gateway: it may have sent)  UNCERTAIN
    503 (unavailable: it took nothing)        RETRY
    429                                       THROTTLED
    401, 403                                  PAUSE_SENDER
    400, 413, 422 with ICS's (non-HTML) body  REJECT
    400, 413, 422 with an HTML body           RETRY
    404 and every other status                RETRY
    ========================================  ================

    Failures without an answer are classified by the adapter (:mod:`ics_sms.workers.ics`):
    refused connection, DNS failure or a timeout while connecting are RETRY (ICS never got
    a byte); a timeout, reset or broken answer after the request was written is UNCERTAIN.
    """
    if status == 429:
        return Disposition.THROTTLED
    if status in (401, 403):
        return Disposition.PAUSE_SENDER
    if 200 <= status < 300 or (status >= 500 and status != UNAVAILABLE):
        return Disposition.UNCERTAIN
    if status in VERDICT_STATUSES and not html:
        return Disposition.REJECT
    return Disposition.RETRY


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
