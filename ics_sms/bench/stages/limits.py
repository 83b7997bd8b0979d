"""Stage 7: the limits of this broker and client library, measured in the same run.

A bare publish-with-confirms loop and a bare consume-and-ack loop on pika's asyncio
adapter, with the same message body, queue type, confirm window and prefetch as the
services, and nothing else: no validation, no batching logic, no HTTP. The bare publisher
fills the send queue that the bare consumer then empties.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pika.spec import Basic, BasicProperties

from ics_sms.bench.amqp import PikaLink, call
from ics_sms.bench.context import RunContext, stage_scope
from ics_sms.bench.messages import sample_body
from ics_sms.bench.results import Sample
from ics_sms.bench.stages.common import cpu_meter, timeout_for
from ics_sms.broker.connect import open_broker
from ics_sms.schemas.senders import Lane

__all__ = ["bare_consume", "bare_publish", "run_limits"]

_WRITE_BATCH = 128


async def run_limits(ctx: RunContext) -> tuple[Sample, Sample]:
    """(publish limit, consume limit) with ``messages`` messages."""
    options = ctx.options
    async with stage_scope(ctx, "limits") as settings:
        topology = settings.topology
        broker = await open_broker(settings, name="ics-sms bench declare")
        try:
            await broker.declare(topology)
        finally:
            await broker.close()
        link = await PikaLink.open(options.broker_url, "ics-sms bench bare loops")
        try:
            meter = cpu_meter(ctx)
            meter.start()
            published = await bare_publish(
                link, topology.send_exchange, topology.send_routing_key(Lane.SERVICE),
                sample_body(topology), options.messages, options.max_in_flight)
            published.extra["cpu_us_per_msg"] = meter.stop(options.messages)
            meter.start()
            consumed = await bare_consume(link, topology.send_queue(Lane.SERVICE),
                                          options.messages, options.prefetch,
                                          timeout_for(ctx, options.messages))
            consumed.extra["cpu_us_per_msg"] = meter.stop(options.messages)
        finally:
            await link.close()
    return published, consumed


@dataclass(slots=True)
class _Confirms:
    """Publisher confirms counted as they come (RabbitMQ confirms a channel in order)."""

    floor: int = 0
    confirmed: int = 0
    refused: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def on_confirm(self, frame: object) -> None:
        method = frame.method  # type: ignore[attr-defined]
        newly = method.delivery_tag - self.floor if method.multiple else 1
        self.floor = max(self.floor, method.delivery_tag)
        if isinstance(method, Basic.Nack):
            self.refused += newly
        self.confirmed += newly
        self.progress.set()


async def bare_publish(link: PikaLink, exchange: str, routing_key: str, body: bytes,
                       count: int, in_flight: int) -> Sample:
    """Persistent, mandatory publishes with up to ``in_flight`` unconfirmed."""
    channel = link.channel
    confirms = _Confirms()
    await call(lambda done: channel.confirm_delivery(confirms.on_confirm, callback=done))
    sent = 0
    started = time.perf_counter()
    while confirms.confirmed < count:
        room = min(in_flight - (sent - confirms.confirmed), count - sent, _WRITE_BATCH)
        for _ in range(max(room, 0)):
            properties = BasicProperties(content_type="application/json", delivery_mode=2,
                                         message_id=f"bare-{sent}")
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            sent += 1
        if room <= 0 or sent == count:
            confirms.progress.clear()
            async with asyncio.timeout(30):
                await confirms.progress.wait()
        else:
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    return Sample(count=count, accounted=confirms.confirmed - confirms.refused,
                  elapsed_s=elapsed, extra={"in_flight": in_flight, "body_bytes": len(body)})


@dataclass(slots=True)
class _Received:
    count: int = 0
    unacked_tag: int = 0
    first: float = 0.0


async def bare_consume(link: PikaLink, queue: str, count: int, prefetch: int,
                       timeout_s: float) -> Sample:
    """Consume ``count`` messages, acking ``multiple`` once per burst of deliveries."""
    channel = link.channel
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()
    state = _Received()

    def ack() -> None:
        channel.basic_ack(state.unacked_tag, multiple=True)
        state.unacked_tag = 0

    def on_message(_channel: object, method: Basic.Deliver, _props: BasicProperties,
                   _body: bytes) -> None:
        if not state.count:
            state.first = time.perf_counter()
        state.count += 1
        if not state.unacked_tag:
            loop.call_soon(ack)
        state.unacked_tag = method.delivery_tag
        if state.count == count and not finished.done():
            finished.set_result(time.perf_counter())

    await call(lambda done: channel.basic_qos(prefetch_count=prefetch, callback=done))
    tag = await call(lambda done: channel.basic_consume(
        queue, on_message, callback=lambda frame: done(frame.method.consumer_tag)))
    try:
        async with asyncio.timeout(timeout_s):
            ended = await finished
    finally:
        await call(lambda done: channel.basic_cancel(tag, callback=done))
    return Sample(count=count, accounted=state.count, elapsed_s=ended - state.first,
                  extra={"prefetch": prefetch})
