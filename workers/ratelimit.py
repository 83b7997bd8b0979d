"""Per-sender rate limiting: a token bucket that callers await, and throttling from 429s."""

from __future__ import annotations

import asyncio
import time

from ics_sms.workers.notices import ThrottledLog

__all__ = ["PACED", "TokenBucket"]

PACED = ThrottledLog("sender paced by its rate_per_s", level="info", amount_field="waited_s")
"""One line per sender at most every few seconds while its ``rate_per_s`` (not ICS, not
the batch size) is what holds messages back: how many waited, and for how long in all."""


class TokenBucket:
    """``rate_per_s`` tokens a second, bursts up to one second's worth."""

    __slots__ = ("_blocked_until", "_capacity", "_key", "_level", "_stamp", "rate_per_s")

    def __init__(self, rate_per_s: float, name: str = "") -> None:
        """``name`` (the sender's) names the bucket in the pacing log line."""
        self.rate_per_s = rate_per_s
        self._key = (("sender", name or "-"),)
        self._capacity = max(rate_per_s, 1.0)
        self._level = self._capacity
        self._stamp = time.monotonic()
        self._blocked_until = 0.0

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate_per_s:g}/s level={self._level:.0f}>"

    def _refill(self, now: float) -> None:
        self._level = min(self._capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    def delay_for(self, count: int) -> float:
        """Take ``count`` tokens (possibly into debt) and return how long to wait first."""
        now = time.monotonic()
        self._refill(now)
        self._level -= count
        wait = 0.0 if self._level >= 0 else -self._level / self.rate_per_s
        blocked = self._blocked_until - now
        if wait > 0 and wait >= blocked:  # the rate, not a 429's Retry-After, holds them
            PACED.note(self._key, count, amount=wait, rate_per_s=self.rate_per_s)
        return max(wait, blocked)

    async def acquire(self, count: int) -> None:
        delay = self.delay_for(count)
        if delay > 0:
            await asyncio.sleep(delay)

    def block_for(self, seconds: float) -> None:
        """ICS said 429: nobody sends for this sender until ``seconds`` have passed."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
