"""The promotional sending window (TRAI: 09:00-21:00 IST by default)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Clock", "PromoWindow", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PromoWindow:
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def of(cls, start: time, end: time, zone: str) -> PromoWindow:
        return cls(start, end, ZoneInfo(zone))

    @property
    def always_open(self) -> bool:
        """A window that starts where it ends is open around the clock."""
        return self.start == self.end

    def is_open(self, now: datetime) -> bool:
        if self.always_open:
            return True
        local = now.astimezone(self.zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # a window across midnight

    def seconds_until_change(self, now: datetime) -> float:
        """Seconds until the window next opens or closes (at least one second)."""
        if self.always_open:
            return 24 * 3600.0
        local = now.astimezone(self.zone)
        boundary = self.end if self.is_open(now) else self.start
        target = local.replace(hour=boundary.hour, minute=boundary.minute, second=0,
                               microsecond=0)
        if target <= local:
            target += timedelta(days=1)
        return max((target - local).total_seconds(), 1.0)
