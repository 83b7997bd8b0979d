"""The one backoff formula: capped exponential growth with jitter, as a pure function.

Every retry or reconnect loop of the project (message retries, broker reconnects, click
events, the sandbox's receipt POSTs) waits ``backoff(attempt, ...)`` seconds. This module
imports nothing of the project, so every package can use it without an import cycle.
"""

from __future__ import annotations

import random

__all__ = ["backoff"]

_MAX_DOUBLINGS = 64
"""2**64 times any sensible base is far past any cap; beyond it ``2.0 ** n`` only risks
an OverflowError (a header claiming attempt 10**9)."""


def backoff(attempt: int, *, base_s: float, cap_s: float,
            rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    The step doubles from ``base_s`` (attempt 1) and stops growing at ``cap_s``; the wait
    is a random share between half and all of the step, so a herd of clients does not
    retry in the same instant while no wait collapses to nothing (a retry of 0 s would
    burn an attempt at once). Attempts below 1 count as 1; ``rng`` makes it reproducible.
    """
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    step = min(cap_s, base_s * 2.0**doublings)
    return step * (0.5 + (rng or random).random() / 2)
