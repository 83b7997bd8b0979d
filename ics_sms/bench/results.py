"""What a benchmark measured: samples (one run of one stage) summarised as best and median."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Sample", "StageResult", "rounded"]


@dataclass(slots=True)
class Sample:
    """One run of one stage.

    ``count`` is what the run sent (messages or receipts), ``accounted`` how many of them
    the stage read back as done (events read, receipts confirmed); a complete run has both
    equal and no error. ``latency_ms`` holds percentiles where the stage measures latency.
    """

    count: int
    accounted: int
    elapsed_s: float
    duplicates: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def rate_per_s(self) -> float:
        return self.accounted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.error is None and self.accounted == self.count

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate_per_s"] = round(self.rate_per_s, 1)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        data["complete"] = self.complete
        return data


@dataclass(slots=True)
class StageResult:
    """Every run of one stage; rates are better higher, latencies lower."""

    key: str
    title: str
    unit: str
    latency: bool = False
    samples: list[Sample] = field(default_factory=list)

    def values(self) -> list[float]:
        good = [s for s in self.samples if s.complete]
        if self.latency:
            return [s.latency_ms["p99"] for s in good if "p99" in s.latency_ms]
        return [s.rate_per_s for s in good]

    @property
    def best(self) -> float | None:
        values = self.values()
        if not values:
            return None
        return min(values) if self.latency else max(values)

    @property
    def median(self) -> float | None:
        values = self.values()
        return statistics.median(values) if values else None

    @property
    def complete(self) -> bool:
        return bool(self.samples) and all(s.complete for s in self.samples)

    def median_sample(self) -> Sample | None:
        """The run whose value is the (lower) median: what a chart of one run shows."""
        good = [s for s in self.samples if s.complete]
        if not good:
            return None
        key = (lambda s: s.latency_ms.get("p99", 0.0)) if self.latency else \
            (lambda s: s.rate_per_s)
        ordered = sorted(good, key=key)
        return ordered[(len(ordered) - 1) // 2]

    def peak(self, name: str) -> float | None:
        """The largest ``extra[name]`` over the runs (peak memory)."""
        values = [float(s.extra[name]) for s in self.samples if s.extra.get(name) is not None]
        return max(values) if values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "metric": "p99_ms" if self.latency else "rate_per_s",
            "best": rounded(self.best),
            "median": rounded(self.median),
            "complete": self.complete,
            "runs": [s.as_json() for s in self.samples],
        }


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
