"""Stage 2: send requests per second from a full queue to ``submitted`` events confirmed.

The queue is filled first; then the worker processes start. Time runs from the moment the
first worker attached its consumer (process start-up excluded) until the last
``submitted`` event was read from the events queue. The bare relay limit (one
:mod:`~ics_sms.bench.relay` process instead of the workers) is measured the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.events import EventReader
from ics_sms.bench.messages import NO_RECEIPT, requests
from ics_sms.bench.procs import Children
from ics_sms.bench.publishing import publish_all, stopper
from ics_sms.bench.results import Sample
from ics_sms.bench.services import start_relay, start_workers
from ics_sms.bench.stages.common import cpu_meter, sandbox_stats, tag_of, timeout_for
from ics_sms.bench.waits import wait_consumers, wait_until
from ics_sms.schemas.senders import Lane

__all__ = ["run_worker"]


async def run_worker(ctx: RunContext, workers: int, *, profile: Path | None = None,
                     relay: bool = False) -> Sample:
    """``workers`` worker processes, or with ``relay`` the bare relay, draining the queue."""
    count = ctx.options.messages
    timeout_s = timeout_for(ctx, count)
    role = "relay" if relay else "worker"
    async with stage_scope(ctx, f"{role}{workers}") as settings, \
            Children(ctx.folder) as children:
        reader = EventReader()
        try:
            await reader.start(settings)
            with stopper() as stop:
                await asyncio.to_thread(
                    publish_all, settings, ctx.senders,
                    requests(tag_of(settings), count, to=NO_RECEIPT),
                    max_in_flight=ctx.options.max_in_flight, stop=stop)
            before = await sandbox_stats(ctx)
            started = ([await start_relay(children, settings)] if relay
                       else await start_workers(children, settings, workers))
            first, last = await wait_consumers(
                ctx.link, settings.topology.send_queue(Lane.SERVICE), workers,
                timeout_s=timeout_s, crashed=children.crashed)
            if profile is not None:  # from here on: the work, not the start-up
                await children.profile(started[0], profile)
            meter = cpu_meter(ctx, **{role: children.pids(role)})
            meter.start()
            await wait_until(lambda: reader.count("submitted") >= count, timeout_s=timeout_s,
                             what=f"{count} submitted events", crashed=children.crashed)
            cpu = meter.stop(count)
            children.measure()
            after = await sandbox_stats(ctx)
        finally:
            await reader.close()
    done = reader.last["submitted"]
    return Sample(
        count=count, accounted=reader.count("submitted"), elapsed_s=done - first,
        duplicates=reader.tracker.duplicates + _resubmitted(before, after),
        extra={
            "workers": workers,
            f"{role}_peak_rss_mb": children.peak_rss_mb(role),
            "attach_spread_s": round(last - first, 3),
            "rate_from_first_event_per_s": round(
                count / max(done - reader.first["submitted"], 1e-9), 1),
            "ics_requests": after["requests"] - before["requests"],
            "cpu_us_per_msg": cpu,
        },
    )


def _resubmitted(before: dict[str, int], after: dict[str, int]) -> int:
    return after["duplicate_smsgids"] - before["duplicate_smsgids"]
