"""What a benchmark run does: one typed, frozen object built by the command line."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Self, get_args

from ics_sms.schemas.settings import WorkerLanes
from ics_sms.schemas.topology import QueueType

__all__ = ["DEFAULT_BROKER_URL", "LANE_CHOICES", "BenchOptions", "Stage", "parse_lane_workers"]

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
LANE_CHOICES: tuple[WorkerLanes, ...] = get_args(WorkerLanes)
"""What ``ICS_SMS_WORKER_LANES`` of a latency-stage worker process may say."""


def parse_lane_workers(text: str) -> tuple[tuple[WorkerLanes, int], ...]:
    """``service=1,promotional=1`` as ``(("service", 1), ("promotional", 1))``: worker
    processes per ``--lanes`` value. Raises ``ValueError`` saying which part is wrong."""
    groups: dict[WorkerLanes, int] = {}
    for part in text.split(","):
        given, sep, count = part.strip().partition("=")
        lanes = next((choice for choice in LANE_CHOICES if choice == given), None)
        if not sep or lanes is None:
            raise ValueError(f"{part.strip()!r}: write LANES=COUNT with LANES one of "
                             f"{', '.join(LANE_CHOICES)}")
        if lanes in groups:
            raise ValueError(f"{lanes!r} is given twice")
        if not count.isdigit() or not 1 <= int(count) <= 16:
            raise ValueError(f"{part.strip()!r}: COUNT must be a number from 1 to 16")
        groups[lanes] = int(count)
    if not any(lanes in groups for lanes in ("service", "all")) or \
            not any(lanes in groups for lanes in ("promotional", "all")):
        raise ValueError("some worker must consume each lane (service and promotional)")
    return tuple(groups.items())


class Stage(StrEnum):
    """The stages, in the order one round runs them (latency paces from the worker stage)."""

    LIMITS = "limits"
    PUBLISH = "publish"
    WORKER = "worker"
    END_TO_END = "e2e"
    INGEST = "ingest"
    LATENCY = "latency"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Sizes, worker settings and what to run. Counts are per run of a stage."""

    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str = "redis://127.0.0.1:6379/0"
    stages: tuple[Stage, ...] = tuple(Stage)
    runs: int = 3
    messages: int = 50_000
    """Send requests of the publish, worker and limit stages."""
    e2e_messages: int = 20_000
    workers: int = 2
    """The worker stage runs with 1..workers processes."""
    pipeline_workers: int = 1
    """Worker processes of the end-to-end and latency stages."""
    lane_workers: tuple[tuple[WorkerLanes, int], ...] = ()
    """Instead, the latency stage's worker processes per lane choice (``--lanes``):
    e.g. ``(("service", 1), ("promotional", 1))``, dedicated lane workers."""
    promotional_nice: int = 0
    """Niceness of promotional-only workers: here every process shares two cores, where a
    cluster gives each lane's pods CPU of their own."""
    batch_max: int = 1000
    prefetch: int = 2000
    linger_ms: float = 20.0
    queue_type: QueueType = QueueType.QUORUM
    max_in_flight: int = 2000
    """Unconfirmed publishes of the producer and of the bare publish loop."""
    receipts: int = 200_000
    receipt_batch: int = 100
    concurrency: int = 64
    """Receipt POSTs in flight during ingest."""
    latency_load: float = 0.5
    """Service-lane pace as a share of the best worker-stage rate."""
    latency_rate: float | None = None
    """A fixed service-lane pace (msg/s) instead: comparable across code changes."""
    latency_s: float = 10.0
    backlog: int = 100_000
    stage_timeout_s: float = 300.0
    profile_dir: str | None = None
    """Record py-spy profiles (raw) of a worker and of the receiver into this folder."""

    @classmethod
    def quick(cls) -> Self:
        """Small counts, one run: checks that every stage works (for tests), not speed."""
        return cls(runs=1, messages=600, e2e_messages=300, receipts=1_000, latency_s=1.5,
                   backlog=2_000, stage_timeout_s=90.0)

    def but(self, **changes: Any) -> BenchOptions:
        """A copy with ``changes`` (the options given on the command line)."""
        return replace(self, **changes)

    def latency_workers(self) -> tuple[tuple[WorkerLanes, int], ...]:
        """Worker processes of the latency stage per ``--lanes`` value."""
        return self.lane_workers or (("all", self.pipeline_workers),)

    def consumers_of(self, lane: str) -> int:
        """How many latency-stage workers consume ``lane``'s queue."""
        return sum(count for lanes, count in self.latency_workers() if lanes in (lane, "all"))

    def worker_counts(self) -> list[int]:
        return list(range(1, self.workers + 1))

    def runs_stage(self, stage: Stage) -> bool:
        return stage in self.stages
