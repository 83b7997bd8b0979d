"""Stage 1: send requests per second through the producer library, with confirms."""

from __future__ import annotations

import asyncio

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.messages import requests
from ics_sms.bench.publishing import publish_all, stopper
from ics_sms.bench.results import Sample
from ics_sms.bench.stages.common import cpu_meter, tag_of
from ics_sms.schemas.senders import Lane

__all__ = ["run_publish"]


async def run_publish(ctx: RunContext) -> Sample:
    """Publish ``messages`` requests into an empty namespace; every one must be queued."""
    count = ctx.options.messages
    async with stage_scope(ctx, "publish") as settings:
        meter = cpu_meter(ctx)
        meter.start()
        with stopper() as stop:
            confirmed, elapsed_s = await asyncio.to_thread(
                publish_all, settings, ctx.senders, requests(tag_of(settings), count),
                max_in_flight=ctx.options.max_in_flight, stop=stop)
        cpu = meter.stop(count)
        queued, _consumers = await ctx.link.counts(settings.topology.send_queue(Lane.SERVICE))
    return Sample(count=count, accounted=min(confirmed, queued), elapsed_s=elapsed_s,
                  extra={"confirmed": confirmed, "queued": queued, "cpu_us_per_msg": cpu})
