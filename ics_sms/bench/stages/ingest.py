"""Stage 4: receipts per second into a receiver process, in batches, on real RabbitMQ.

The message contexts are in Redis first (as the workers would have left them); every
smsgid carries a valid MAC. A receipt counts once the receiver answered 200, i.e. once its
event is confirmed by the broker; the events queue must then hold one event per receipt.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.messages import SERVICE, message_id
from ics_sms.bench.procs import Children, free_port
from ics_sms.bench.results import Sample
from ics_sms.bench.services import start_receiver
from ics_sms.bench.stages.common import cpu_meter, tag_of
from ics_sms.schemas.messages import Encoding
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import MessageContext, open_context_store

__all__ = ["make_bodies", "post_batches", "run_ingest"]

_KINDS = ("delivered",) * 7 + ("failed",) * 2 + ("clicked",)
_CHUNK = 1000


async def run_ingest(ctx: RunContext, *, profile: Path | None = None) -> Sample:
    options = ctx.options
    count = options.receipts
    port = free_port()
    sender = ctx.senders.get(SERVICE)
    assert sender is not None
    async with stage_scope(ctx, "ingest") as settings, Children(ctx.folder) as children:
        ids = [message_id(tag_of(settings), n) for n in range(count)]
        bodies = make_bodies(SmsgidSigner(ctx.callback_secret), ids, options.receipt_batch,
                             sender.name)
        await _fill_contexts(settings, ids, sender.name)
        receiver = await start_receiver(children, settings, port)
        if profile is not None:
            await children.profile(receiver, profile)
        meter = cpu_meter(ctx, receiver=children.pids("receiver"))
        meter.start()
        started = time.perf_counter()
        statuses, confirmed = await post_batches(
            f"http://127.0.0.1:{port}{sender.tracking_path()}", bodies, options.concurrency)
        elapsed_s = time.perf_counter() - started
        cpu = meter.stop(count)
        children.measure()
        events, _consumers = await ctx.link.counts(settings.topology.events_queue)
    return Sample(
        count=count, accounted=min(confirmed, events), elapsed_s=elapsed_s,
        extra={
            "batch": options.receipt_batch,
            "concurrency": options.concurrency,
            "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
            "confirmed_receipts": confirmed,
            "events_in_queue": events,
            "receiver_peak_rss_mb": children.peak_rss_mb("receiver"),
            "cpu_us_per_receipt": cpu,
        },
    )


def _record(kind: str, smsgid: str, ts: int) -> dict[str, object]:
    record: dict[str, object] = {"ts": ts, "meta": smsgid}
    if kind == "failed":
        record.update(code="914", description="undelivered")
    elif kind == "clicked":
        record.update(url="https://shop.example/sale", shortUrl="https://ics.link/Ab3")
    return record


def make_bodies(signer: SmsgidSigner, message_ids: Sequence[str], batch: int,
                sender: str) -> list[bytes]:
    """JSON receipt bodies of ``batch`` records each, grouped by event as ICS does."""
    ts = int(time.time())
    bodies = []
    for start in range(0, len(message_ids), batch):
        groups: dict[str, list[dict[str, object]]] = {}
        for offset, one in enumerate(message_ids[start:start + batch]):
            kind = _KINDS[(start + offset) % len(_KINDS)]
            groups.setdefault(kind, []).append(_record(kind, signer.sign(one, sender), ts))
        bodies.append(orjson.dumps([{"event": k, "data": v} for k, v in groups.items()]))
    return bodies


async def post_batches(url: str, bodies: Sequence[bytes], concurrency: int
                       ) -> tuple[Counter[int], int]:
    """POST every body, ``concurrency`` in flight: (HTTP statuses, receipts processed)."""
    statuses: Counter[int] = Counter()
    processed = 0
    queue = iter(bodies)
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal processed
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                statuses[response.status] += 1
                if response.status == 200:
                    processed += orjson.loads(answer)["processed"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return statuses, processed


async def _fill_contexts(settings: Settings, message_ids: Sequence[str], sender: str) -> None:
    """The contexts the workers would have left in Redis (deleted with the namespace)."""
    async with open_context_store(settings) as store:
        for start in range(0, len(message_ids), _CHUNK):
            await store.put_many([
                MessageContext(message_id=m, campaign_id="bench", sender=sender,
                               metadata={"list": "bench"}, segments=1, encoding=Encoding.GSM7,
                               urls=("https://shop.example/sale",))
                for m in message_ids[start:start + _CHUNK]])
