"""Accounts for every message of the demo from the events it reads."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ics_sms.schemas.messages import ReceiptEvent, Status

__all__ = ["DemoTracker", "percentiles"]


def percentiles(samples: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {f"p{p}": ordered[min(last, round(p / 100 * last))] for p in points}


@dataclass
class DemoTracker:
    """Message id -> what happened, fed by the events consumer."""

    expected: int = 0
    published_at: dict[str, float] = field(default_factory=dict)
    terminal: dict[str, Status] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    seen_events: set[str] = field(default_factory=set)
    duplicates: int = 0
    submit_latency_s: list[float] = field(default_factory=list)
    deliver_latency_s: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def published(self, message_ids: list[str]) -> None:
        now = time.monotonic()
        for message_id in message_ids:
            self.published_at[message_id] = now

    def record(self, event: ReceiptEvent) -> None:
        if event.event_id in self.seen_events:
            self.duplicates += 1
            return
        self.seen_events.add(event.event_id)
        self.counts[event.status.value] += 1
        sent = self.published_at.get(event.message_id)
        elapsed = None if sent is None else time.monotonic() - sent
        if event.status is Status.SUBMITTED and elapsed is not None:
            self.submit_latency_s.append(elapsed)
        if event.status is Status.DELIVERED and elapsed is not None:
            self.deliver_latency_s.append(elapsed)
        if event.status in (Status.FAILED, Status.REJECTED) and event.error_code:
            self.failure_codes[f"{event.status.value}:{event.error_code}"] += 1
        if event.status.terminal and event.message_id not in self.terminal:
            self.terminal[event.message_id] = event.status

    @property
    def complete(self) -> bool:
        return self.expected > 0 and len(self.terminal) >= self.expected

    def unaccounted(self) -> list[str]:
        return [m for m in self.published_at if m not in self.terminal]

    def summary(self) -> dict[str, Any]:
        elapsed = (self.finished or time.monotonic()) - self.started
        return {
            "messages": self.expected,
            "published": len(self.published_at),
            "accounted_for": len(self.terminal),
            "unaccounted": len(self.unaccounted()),
            "events": dict(sorted(self.counts.items())),
            "terminal": dict(sorted(Counter(s.value for s in self.terminal.values()).items())),
            "failure_codes": dict(sorted(self.failure_codes.items())),
            "duplicate_events": self.duplicates,
            "elapsed_s": round(elapsed, 2),
            "throughput_per_s": round(len(self.terminal) / elapsed, 1) if elapsed else 0.0,
            "latency_ms": {
                "publish_to_submitted": {k: round(v * 1000, 1) for k, v in
                                         percentiles(self.submit_latency_s).items()},
                "publish_to_delivered": {k: round(v * 1000, 1) for k, v in
                                         percentiles(self.deliver_latency_s).items()},
            },
        }
