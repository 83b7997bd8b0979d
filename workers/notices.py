"""Log lines about things that happen per message, at most one per key and interval.

A campaign whose every message is rejected (no DLT template) or paced by its sender's
``rate_per_s`` would otherwise log a line per message, or nothing at all. A
:class:`ThrottledLog` counts occurrences per key (sender, reason) and writes the first at
once, then at most one line per ``interval_s`` with the counts since the previous line; a
timer writes what is left when occurrences stop. Callers note once per batch, not per
message, so the hot path stays a counter increment.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

__all__ = ["LOG_INTERVAL_S", "ThrottledLog"]

LOG_INTERVAL_S = 10.0
"""At most one line per key in this many seconds."""

Key = tuple[tuple[str, str], ...]
"""The fields that tell one tally from another, e.g. ``(("sender", "a"), ("reason", "x"))``."""


@dataclass(slots=True)
class _Tally:
    count: int = 0
    amount: float = 0.0
    example: str | None = None
    last_line: float = -math.inf
    timer: asyncio.TimerHandle | None = None
    extra: dict[str, object] = field(default_factory=dict)


class ThrottledLog:
    """Counts per key; logs ``event`` with ``count`` (and ``amount_field``) since the last line."""

    def __init__(self, event: str, *, level: Literal["info", "warning"] = "warning",
                 amount_field: str | None = None, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.event = event
        self.level = level
        self.amount_field = amount_field
        self.interval_s = interval_s
        self._clock = clock
        self._tallies: dict[Key, _Tally] = {}
        self._log = structlog.get_logger(__name__)

    def __repr__(self) -> str:
        pending = sum(t.count for t in self._tallies.values())
        return f"<ThrottledLog {self.event!r} keys={len(self._tallies)} pending={pending}>"

    def note(self, key: Key, count: int = 1, *, amount: float = 0.0,
             example: str | None = None, **extra: object) -> None:
        """``count`` more occurrences for ``key``; logs now if its interval has passed."""
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        tally.count += count
        tally.amount += amount
        if tally.example is None:
            tally.example = example
        tally.extra.update(extra)
        if self._clock() - tally.last_line >= self.interval_s:
            self._emit(key, tally)
        elif tally.timer is None:
            tally.timer = self._schedule(key, tally)

    def flush(self) -> None:
        """Log every key with occurrences not logged yet (at shutdown, or from the timer)."""
        for key, tally in self._tallies.items():
            if tally.count:
                self._emit(key, tally)

    def _emit(self, key: Key, tally: _Tally) -> None:
        now = self._clock()
        fields: dict[str, object] = dict(key)
        fields.update(tally.extra)
        fields["count"] = tally.count
        if self.amount_field is not None:
            fields[self.amount_field] = round(tally.amount, 3)
        if tally.example is not None:
            fields["example"] = tally.example
        if tally.last_line > -math.inf:
            fields["since_s"] = round(now - tally.last_line, 1)
        if self.level == "info":
            self._log.info(self.event, **fields)
        else:
            self._log.warning(self.event, **fields)
        tally.count, tally.amount, tally.example = 0, 0.0, None
        tally.last_line = now
        if tally.timer is not None:
            tally.timer.cancel()
            tally.timer = None

    def _schedule(self, key: Key, tally: _Tally) -> asyncio.TimerHandle | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next note after the interval logs the counts
            return None
        delay = max(tally.last_line + self.interval_s - self._clock(), 0.0)
        return loop.call_later(delay, self._on_timer, key)

    def _on_timer(self, key: Key) -> None:
        tally = self._tallies[key]
        tally.timer = None
        if tally.count:
            self._emit(key, tally)
