"""Per-sender rate limiting: a token bucket that callers await, and throttling from 429s."""

from __future__ import annotations

import asyncio
import time

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate_per_s`` tokens a second, bursts up to one second's worth."""

    __slots__ = ("_blocked_until", "_capacity", "_level", "_stamp", "rate_per_s")

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
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
        return max(wait, self._blocked_until - now)

    async def acquire(self, count: int) -> None:
        delay = self.delay_for(count)
        if delay > 0:
            await asyncio.sleep(delay)

    def block_for(self, seconds: float) -> None:
        """ICS said 429: nobody sends for this sender until ``seconds`` have passed."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
