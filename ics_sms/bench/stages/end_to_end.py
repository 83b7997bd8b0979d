"""Stage 3: messages per second from publish until their ``delivered`` event is read.

Receiver and workers run in their own processes and are ready before the clock starts;
the sandbox posts every receipt at once. The clock runs from the first publish until the
last final event; every message must end with one.
"""

from __future__ import annotations

import asyncio
import time

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.events import EventReader
from ics_sms.bench.messages import requests
from ics_sms.bench.procs import Children, free_port
from ics_sms.bench.publishing import publish_all, stopper
from ics_sms.bench.results import Sample
from ics_sms.bench.services import start_receiver, start_workers
from ics_sms.bench.stages.common import (
    cpu_meter,
    sandbox_stats,
    tag_of,
    task_problem,
    timeout_for,
)
from ics_sms.bench.waits import wait_consumers, wait_until
from ics_sms.demo.tracker import DemoTracker
from ics_sms.schemas.messages import TERMINAL_STATUSES
from ics_sms.schemas.senders import Lane

__all__ = ["run_end_to_end"]


async def run_end_to_end(ctx: RunContext) -> Sample:
    count = ctx.options.e2e_messages
    workers = ctx.options.pipeline_workers
    timeout_s = timeout_for(ctx, count)
    port = free_port()
    tracker = DemoTracker(expected=count)
    reader = EventReader(tracker)
    async with stage_scope(ctx, "e2e", public_url=f"http://127.0.0.1:{port}") as settings, \
            Children(ctx.folder) as children:
        try:
            await reader.start(settings)
            await start_receiver(children, settings, port)
            await start_workers(children, settings, workers)
            await wait_consumers(ctx.link, settings.topology.send_queue(Lane.SERVICE), workers,
                                 timeout_s=timeout_s, crashed=children.crashed)
            before = await sandbox_stats(ctx)
            meter = cpu_meter(ctx, worker=children.pids("worker"),
                              receiver=children.pids("receiver"))
            meter.start()
            started = tracker.started = time.monotonic()
            with stopper() as stop:
                publishing = asyncio.ensure_future(asyncio.to_thread(
                    publish_all, settings, ctx.senders, requests(tag_of(settings), count),
                    max_in_flight=ctx.options.max_in_flight, stop=stop, tracker=tracker))
                await wait_until(lambda: tracker.complete and publishing.done(),
                                 timeout_s=timeout_s, what=f"{count} final events",
                                 crashed=lambda: task_problem(publishing) or children.crashed())
            cpu = meter.stop(count)
            children.measure()
            after = await sandbox_stats(ctx)
        finally:
            await reader.close()
    finished = max(reader.last.get(status.value, 0.0) for status in TERMINAL_STATUSES)
    summary = tracker.summary()
    return Sample(
        count=count, accounted=len(tracker.terminal), elapsed_s=finished - started,
        duplicates=tracker.duplicates + after["duplicate_smsgids"] - before["duplicate_smsgids"],
        latency_ms=summary["latency_ms"]["publish_to_delivered"],
        extra={
            "workers": workers,
            "final_status": summary["terminal"],
            "publish_to_submitted_ms": summary["latency_ms"]["publish_to_submitted"],
            "worker_peak_rss_mb": children.peak_rss_mb("worker"),
            "receiver_peak_rss_mb": children.peak_rss_mb("receiver"),
            "cpu_us_per_msg": cpu,
        },
    )
