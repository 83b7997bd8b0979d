"""Stage 5: publish-to-submitted latency of service-lane messages at a steady pace.

The pace is ``latency_load`` (50 %) of the best worker-stage rate measured so far with the
same number of workers. The workers consume both lanes, or (``lane_workers``) each
consumes the lanes it is given, as dedicated lane workers would. With ``backlog``, a
promotional backlog fills its queue before the workers start, and the paced service
messages are published while it drains: service traffic must not wait behind it. Every
message, backlog included, must be submitted.

Measurement starts warm: after 200 service messages went through (steady), or once a tenth
of the backlog (at most 2,000) was submitted; warm-up messages are accounted for but not
measured.
"""

from __future__ import annotations

import asyncio
import math
import threading

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.events import EventReader
from ics_sms.bench.messages import NO_RECEIPT, PROMOTIONAL, requests
from ics_sms.bench.procs import Children
from ics_sms.bench.publishing import publish_all, publish_paced, stopper
from ics_sms.bench.results import Sample
from ics_sms.bench.services import start_sandbox, start_workers
from ics_sms.bench.stages.common import cpu_meter, tag_of, timeout_for
from ics_sms.bench.waits import wait_consumers, wait_until
from ics_sms.demo.tracker import percentiles
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings

__all__ = ["FALLBACK_RATE_PER_S", "pace_for", "run_latency"]

FALLBACK_RATE_PER_S = 1000.0
"""Pace when no worker stage ran before (``--stages latency`` alone)."""
_WARM_UP = 200
_BACKLOG_WARM_UP = 2000


def pace_for(ctx: RunContext) -> float:
    if ctx.options.latency_rate is not None:
        return ctx.options.latency_rate
    best = ctx.best_worker_rate.get(ctx.options.pipeline_workers)
    return ctx.options.latency_load * best if best else FALLBACK_RATE_PER_S


async def run_latency(ctx: RunContext, *, backlog: bool) -> Sample:
    options = ctx.options
    promotional = options.backlog if backlog else 0
    rate = pace_for(ctx)
    timeout_s = timeout_for(ctx, promotional + int(rate * options.latency_s))
    reader = EventReader()
    async with stage_scope(ctx, "backlog" if backlog else "latency") as settings, \
            Children(ctx.folder) as children:
        service_tag, promo_tag = f"{tag_of(settings)}-svc", f"{tag_of(settings)}-promo"
        warm_tag = f"{tag_of(settings)}-warm"
        warm_up = 0 if promotional else _WARM_UP
        try:
            await reader.start(settings)
            if promotional:
                with stopper() as stop:
                    await asyncio.to_thread(
                        publish_all, settings, ctx.senders,
                        requests(promo_tag, promotional, sender=PROMOTIONAL, to=NO_RECEIPT),
                        max_in_flight=options.max_in_flight, stop=stop)
            await _start_workers(ctx, settings, children)
            await _attached(ctx, settings, children)
            await _warm_up(ctx, settings, reader, children, warm_tag, warm_up)
            await wait_until(
                lambda: reader.count("submitted", promo_tag)
                >= min(promotional // 10, _BACKLOG_WARM_UP),
                timeout_s=timeout_s, what="the backlog started draining", crashed=children.crashed)
            own_sandbox = {"service_sandbox": pids} if (pids := children.pids("sandbox")) else {}
            meter = cpu_meter(ctx, worker=children.pids("worker"), **own_sandbox)
            meter.start()
            with stopper() as stop:
                watcher = asyncio.ensure_future(_stop_when_drained(reader, promo_tag,
                                                                   promotional, stop))
                try:
                    pace = await asyncio.to_thread(
                        publish_paced, settings, ctx.senders, service_tag, reader.tracker,
                        rate_per_s=rate, duration_s=options.latency_s, stop=stop,
                        max_in_flight=options.max_in_flight)
                finally:
                    watcher.cancel()
            drained_while_pacing = reader.count("submitted", promo_tag)
            cpu = meter.stop(pace.published + drained_while_pacing)
            await wait_until(
                lambda: reader.count("submitted", service_tag) >= pace.published
                and reader.count("submitted", promo_tag) >= promotional
                and reader.count("submitted", warm_tag) >= warm_up,
                timeout_s=timeout_s, what="every submitted event", crashed=children.crashed)
            children.measure()
        finally:
            await reader.close()
    latency = _milliseconds(reader.tracker.submit_latency_s)
    return Sample(
        count=pace.published + promotional + warm_up,
        accounted=sum(reader.count("submitted", tag) for tag in (service_tag, promo_tag, warm_tag)),
        elapsed_s=pace.elapsed_s, duplicates=reader.tracker.duplicates, latency_ms=latency,
        extra={
            "workers": sum(count for _lanes, count in options.latency_workers()),
            "lane_workers": dict(options.latency_workers()),
            "promotional_nice": options.promotional_nice if options.lane_workers else 0,
            "target_rate_per_s": round(rate, 1),
            "paced_rate_per_s": round(pace.rate_per_s, 1),
            "service_messages": pace.published,
            "publish_calls": pace.calls,
            "backlog": promotional,
            "backlog_submitted_while_pacing": drained_while_pacing,
            "publish_to_occurred_at_ms": _milliseconds(reader.occurred_latency_s),
            "cpu_us_per_msg": cpu,
            "worker_cpu_share": round(cpu["worker"] * 1e-6 * (pace.published + drained_while_pacing)
                                      / max(pace.elapsed_s, 1e-9), 2),
            "worker_peak_rss_mb": children.peak_rss_mb("worker"),
        },
    )


async def _start_workers(ctx: RunContext, settings: Settings, children: Children) -> None:
    """The stage's workers. Dedicated lane workers also get an ICS sandbox per lane: ICS
    serves its clients side by side, where one sandbox process would make the service
    lane's requests wait behind the promotional lane's 1,000-record batches."""
    options = ctx.options
    for lanes, count in options.latency_workers():
        nice = options.promotional_nice if lanes == "promotional" else 0
        ics = settings
        if lanes == "service":
            sandbox = await start_sandbox(children, settings)
            ics = settings.model_copy(update={"ics_url": sandbox.url})
        await start_workers(children, ics, count, lanes, nice)


async def _warm_up(ctx: RunContext, settings: Settings, reader: EventReader,
                   children: Children, tag: str, count: int) -> None:
    """``count`` service messages through, unmeasured: connections open, code paths hot."""
    if not count:
        return
    with stopper() as stop:
        await asyncio.to_thread(publish_all, settings, ctx.senders,
                                requests(tag, count, to=NO_RECEIPT),
                                max_in_flight=ctx.options.max_in_flight, stop=stop)
    await wait_until(lambda: reader.count("submitted", tag) >= count,
                     timeout_s=ctx.options.stage_timeout_s, what="the warm-up messages",
                     crashed=children.crashed)


def _milliseconds(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 and max of latencies in seconds, as milliseconds."""
    latency = {k: round(v * 1000, 1) for k, v in percentiles(samples).items()}
    if samples:
        latency["max"] = round(max(samples) * 1000, 1)
    return latency


async def _attached(ctx: RunContext, settings: Settings, children: Children) -> None:
    """Every worker consumes its lanes before the first paced message goes out."""
    for lane in Lane:
        await wait_consumers(ctx.link, settings.topology.send_queue(lane),
                             ctx.options.consumers_of(lane.value),
                             timeout_s=ctx.options.stage_timeout_s, crashed=children.crashed)


async def _stop_when_drained(reader: EventReader, tag: str, backlog: int,
                             stop: threading.Event) -> None:
    """Pacing measures *while* the backlog drains: it stops once the backlog is gone."""
    if not backlog:
        return
    await wait_until(lambda: reader.count("submitted", tag) >= backlog, timeout_s=math.inf,
                     what="the backlog drained", poll_s=0.05)
    stop.set()
