"""Stage 4: receipts per second into a receiver process, in batches, on real RabbitMQ.

The message contexts are in Redis first (as the workers would have left them); every
smsgid carries a valid MAC. A receipt counts once the receiver answered 200, i.e. once its
event is confirmed by the broker; the events queue must then hold one event per receipt.
"""

from __future__ import annotations

from pathlib import Path

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.messages import SERVICE, message_id
from ics_sms.bench.procs import Children, free_port
from ics_sms.bench.results import Sample
from ics_sms.bench.services import start_receiver
from ics_sms.bench.stages.common import cpu_meter, tag_of
from ics_sms.callbacks.bench import _fill_contexts, make_bodies, post_batches
from ics_sms.schemas.smsgid import SmsgidSigner

__all__ = ["run_ingest"]


async def run_ingest(ctx: RunContext, *, profile: Path | None = None) -> Sample:
    options = ctx.options
    count = options.receipts
    port = free_port()
    sender = ctx.senders.get(SERVICE)
    assert sender is not None
    async with stage_scope(ctx, "ingest") as settings, Children(ctx.folder) as children:
        ids = [message_id(tag_of(settings), n) for n in range(count)]
        bodies = make_bodies(SmsgidSigner(ctx.callback_secret), ids, options.receipt_batch)
        await _fill_contexts(settings, ids)
        receiver = await start_receiver(children, settings, port)
        if profile is not None:
            await children.profile(receiver, profile)
        meter = cpu_meter(ctx, receiver=children.pids("receiver"))
        meter.start()
        result = await post_batches(f"http://127.0.0.1:{port}{sender.tracking_path()}",
                                    bodies, options.concurrency)
        cpu = meter.stop(count)
        children.measure()
        events, _consumers = await ctx.link.counts(settings.topology.events_queue)
    return Sample(
        count=count, accounted=min(result.receipts, events), elapsed_s=result.elapsed_s,
        extra={
            "batch": options.receipt_batch,
            "concurrency": options.concurrency,
            "http_statuses": {str(k): v for k, v in sorted(result.statuses.items())},
            "confirmed_receipts": result.receipts,
            "events_in_queue": events,
            "receiver_peak_rss_mb": children.peak_rss_mb("receiver"),
            "cpu_us_per_receipt": cpu,
        },
    )
