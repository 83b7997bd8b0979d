"""What a benchmark run does: one typed, frozen object built by the command line."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Self

from ics_sms.schemas.topology import QueueType

__all__ = ["DEFAULT_BROKER_URL", "BenchOptions", "Stage"]

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


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

    def worker_counts(self) -> list[int]:
        return list(range(1, self.workers + 1))

    def runs_stage(self, stage: Stage) -> bool:
        return stage in self.stages
