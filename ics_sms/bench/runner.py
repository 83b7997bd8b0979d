"""Runs the benchmark: the sandbox once, then ``runs`` rounds of every chosen stage.

Rounds interleave the stages (ABC ABC ABC rather than AAA BBB CCC) so that a noisy
neighbour slows every stage a little rather than one stage a lot.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from ics_sms.bench.amqp import PikaLink
from ics_sms.bench.context import RunContext
from ics_sms.bench.messages import bench_senders
from ics_sms.bench.options import BenchOptions, Stage
from ics_sms.bench.procs import Children
from ics_sms.bench.results import Sample, StageResult
from ics_sms.bench.services import start_sandbox
from ics_sms.bench.stages.end_to_end import run_end_to_end
from ics_sms.bench.stages.ingest import run_ingest
from ics_sms.bench.stages.latency import run_latency
from ics_sms.bench.stages.limits import run_limits
from ics_sms.bench.stages.publish import run_publish
from ics_sms.bench.stages.worker import run_worker
from ics_sms.bench.system import broker_pids, load_average, machine_info
from ics_sms.schemas.senders import save_senders
from ics_sms.schemas.settings import redact_url

__all__ = ["BenchReport", "Progress", "run_bench"]

log = structlog.get_logger(__name__)

Progress = Callable[[str], None]


@dataclass(slots=True)
class BenchReport:
    options: BenchOptions
    machine: dict[str, Any]
    broker: dict[str, str]
    stages: dict[str, StageResult]
    profiles: dict[str, str] = field(default_factory=dict)


def _stage_results(options: BenchOptions) -> dict[str, StageResult]:
    batch = options.receipt_batch
    backlog = f"{options.backlog:,}"
    load = (f"{options.latency_rate:,.0f}/s" if options.latency_rate is not None
            else f"{options.latency_load:.0%}")
    lanes = "".join(f", {n} {choice}" for choice, n in options.lane_workers)
    if options.lane_workers and options.promotional_nice:
        lanes += f" (nice {options.promotional_nice})"
    wanted: list[tuple[Stage, StageResult]] = [
        (Stage.LIMITS, StageResult("limit_publish", "limit: bare publish+confirm", "msg/s")),
        (Stage.LIMITS, StageResult("limit_consume", "limit: bare consume+ack", "msg/s")),
        (Stage.LIMITS, StageResult("limit_relay", "limit: bare relay (1 process)", "msg/s")),
        (Stage.PUBLISH, StageResult("publish", "publish (producer)", "msg/s")),
        *[(Stage.WORKER, StageResult(f"worker_{n}", f"worker stage x{n}", "msg/s"))
          for n in options.worker_counts()],
        (Stage.END_TO_END, StageResult("e2e", "end to end", "msg/s")),
        (Stage.INGEST, StageResult("ingest", f"receiver ingest ({batch}/POST)", "receipts/s")),
        (Stage.LATENCY, StageResult("latency", f"service latency at {load}", "ms",
                                    latency=True)),
        (Stage.LATENCY, StageResult("latency_backlog", f"same, {backlog} promo backlog{lanes}",
                                    "ms", latency=True)),
    ]
    return {result.key: result for stage, result in wanted if options.runs_stage(stage)}


async def run_bench(options: BenchOptions, progress: Progress = lambda _line: None
                    ) -> BenchReport:
    """Run every chosen stage ``options.runs`` times; child processes never outlive it."""
    machine = machine_info()
    stages = _stage_results(options)
    profiles: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ics-sms-bench-") as tmp:
        folder = Path(tmp)
        senders = bench_senders()
        save_senders(folder / "senders.toml", senders)
        link = await PikaLink.open(options.broker_url, "ics-sms bench")
        broker = {"url": redact_url(options.broker_url), "version": link.server_version}
        try:
            ctx = RunContext(options, folder, senders, folder / "senders.toml",
                             secrets.token_urlsafe(24), "http://127.0.0.1:9", link, {})
            async with Children(folder) as services:
                sandbox = await start_sandbox(services, ctx.settings())
                ctx.sandbox_url, ctx.sandbox_pid = sandbox.url, sandbox.pid
                ctx.broker_pids = broker_pids(options.broker_url)
                for round_no in range(1, options.runs + 1):
                    await _round(ctx, stages, round_no, progress, profiles)
        finally:
            await link.close()
    machine["load_average_end"] = load_average()
    return BenchReport(options, machine, broker, stages, profiles)


async def _round(ctx: RunContext, stages: dict[str, StageResult], round_no: int,
                 progress: Progress, profiles: dict[str, str]) -> None:
    options = ctx.options
    label = f"[{round_no}/{options.runs}]"

    def note(key: str, sample: Sample) -> Sample:
        stages[key].samples.append(sample)
        progress(f"{label} {_describe(stages[key], sample)}")
        return sample

    async def record(key: str, run: Callable[[], Awaitable[Sample]], count: int) -> Sample:
        return note(key, await _guarded(run, count))

    profile_dir = Path(options.profile_dir) if options.profile_dir and round_no == 1 else None
    if options.runs_stage(Stage.LIMITS):
        try:
            published, consumed = await run_limits(ctx)
        except Exception as exc:  # recorded as failed runs; the other stages still run
            log.warning("bench stage failed", stage="limits", error=repr(exc))
            published = consumed = _failed(options.messages, exc)
        note("limit_publish", published)
        note("limit_consume", consumed)
        await record("limit_relay", partial(run_worker, ctx, 1, relay=True), options.messages)
    if options.runs_stage(Stage.PUBLISH):
        await record("publish", lambda: run_publish(ctx), options.messages)
    if options.runs_stage(Stage.WORKER):
        for workers in options.worker_counts():
            profile = _profile_path(profile_dir, "worker", profiles) if workers == 1 else None
            sample = await record(f"worker_{workers}",
                                  partial(run_worker, ctx, workers, profile=profile),
                                  options.messages)
            if sample.complete:
                best = ctx.best_worker_rate.get(workers, 0.0)
                ctx.best_worker_rate[workers] = max(best, sample.rate_per_s)
    if options.runs_stage(Stage.END_TO_END):
        await record("e2e", lambda: run_end_to_end(ctx), options.e2e_messages)
    if options.runs_stage(Stage.INGEST):
        profile = _profile_path(profile_dir, "receiver", profiles)
        await record("ingest", lambda: run_ingest(ctx, profile=profile), options.receipts)
    if options.runs_stage(Stage.LATENCY):
        await record("latency", lambda: run_latency(ctx, backlog=False), 0)
        await record("latency_backlog", lambda: run_latency(ctx, backlog=True), options.backlog)


async def _guarded(run: Callable[[], Awaitable[Sample]], count: int) -> Sample:
    try:
        return await run()
    except Exception as exc:  # recorded as a failed run; the other stages still run
        log.warning("bench stage failed", error=repr(exc))
        return _failed(count, exc)


def _failed(count: int, exc: Exception) -> Sample:
    return Sample(count=count, accounted=0, elapsed_s=0.0, error=str(exc) or repr(exc))


def _profile_path(folder: Path | None, role: str, profiles: dict[str, str]) -> Path | None:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{role}.raw"
    profiles[role] = str(path)
    return path


def _describe(result: StageResult, sample: Sample) -> str:
    if sample.error is not None:
        return f"{result.title}: FAILED: {sample.error}"
    accounted = f"{sample.accounted:,}/{sample.count:,} accounted"
    if result.latency:
        text = " ".join(f"{k} {v:,.0f}" for k, v in sample.latency_ms.items())
        return f"{result.title}: {text} ms ({accounted})"
    return f"{result.title}: {sample.rate_per_s:,.0f} {result.unit} ({accounted})"
