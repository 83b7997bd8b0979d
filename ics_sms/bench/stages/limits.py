"""Stage 7: the limits of this broker and client library, measured in the same run.

A bare publish-with-confirms loop and a bare consume-and-ack loop on pika's asyncio
adapter, with the same message body, queue type, confirm window and prefetch as the
services, and nothing else: no validation, no batching logic, no HTTP. The bare publisher
fills the send queue that the bare consumer then empties. The third limit, the bare relay
(:mod:`~ics_sms.bench.relay`), runs like the worker stage (see ``stages/worker.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

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


async def bare_publish(link: PikaLink, exchange: str, routing_key: str, body: bytes,
                       count: int, in_flight: int) -> Sample:
    """Persistent, mandatory publishes with up to ``in_flight`` unconfirmed."""
    channel = link.channel
    confirmed = refused = floor = sent = 0
    progress = asyncio.Event()

    def on_confirm(frame: Any) -> None:  # RabbitMQ confirms a channel in order
        nonlocal confirmed, refused, floor
        method = frame.method
        newly = method.delivery_tag - floor if method.multiple else 1
        floor = max(floor, method.delivery_tag)
        refused += newly if isinstance(method, Basic.Nack) else 0
        confirmed += newly
        progress.set()

    await call(lambda done: channel.confirm_delivery(on_confirm, callback=done))
    started = time.perf_counter()
    while confirmed < count:
        room = min(in_flight - (sent - confirmed), count - sent, _WRITE_BATCH)
        for _ in range(max(room, 0)):
            properties = BasicProperties(content_type="application/json", delivery_mode=2,
                                         message_id=f"bare-{sent}")
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            sent += 1
        if room > 0 and sent < count:
            await asyncio.sleep(0)
            continue
        progress.clear()
        async with asyncio.timeout(30):
            await progress.wait()
    return Sample(count=count, accounted=confirmed - refused,
                  elapsed_s=time.perf_counter() - started,
                  extra={"in_flight": in_flight, "body_bytes": len(body)})


async def bare_consume(link: PikaLink, queue: str, count: int, prefetch: int,
                       timeout_s: float) -> Sample:
    """Consume ``count`` messages, acking ``multiple`` once per burst of deliveries."""
    channel = link.channel
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()
    received = unacked_tag = 0
    first = 0.0

    def ack() -> None:
        nonlocal unacked_tag
        channel.basic_ack(unacked_tag, multiple=True)
        unacked_tag = 0

    def on_message(_channel: object, method: Basic.Deliver, _props: object, _body: bytes
                   ) -> None:
        nonlocal received, unacked_tag, first
        first = first or time.perf_counter()
        received += 1
        if not unacked_tag:
            loop.call_soon(ack)
        unacked_tag = method.delivery_tag
        if received == count and not finished.done():
            finished.set_result(time.perf_counter())

    await call(lambda done: channel.basic_qos(prefetch_count=prefetch, callback=done))
    tag = await call(lambda done: channel.basic_consume(
        queue, on_message, callback=lambda frame: done(frame.method.consumer_tag)))
    try:
        async with asyncio.timeout(timeout_s):
            ended = await finished
    finally:
        await call(lambda done: channel.basic_cancel(tag, callback=done))
    return Sample(count=count, accounted=received, elapsed_s=ended - first,
                  extra={"prefetch": prefetch})
