"""The bare relay: the honest ceiling of a worker process (``python -m ics_sms.bench.relay``).

One pika connection, with the services' transport, that consumes send requests of the
service lane, publishes one persistent event per request to the events exchange on a
confirming channel, and acks a request once its event is confirmed. RabbitMQ confirms a
channel in order (often ``multiple``), and publish number *n* is delivery *n*, so each
confirm frame becomes one ack frame: confirms are windowed by the prefetch, as the worker's
are by its batches. Nothing else: no validation, no batching, no HTTP, no Redis. The
event is a real ``submitted`` event with the request's ``message_id`` spliced in.

Settings come from the environment, as a worker's do; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from ics_sms.bench.amqp import PikaLink, call, open_channel
from ics_sms.broker.codec import event_message_from_fields
from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings

__all__ = ["event_template", "relay"]

_MARK = "@message_id@"


def event_template(settings: Settings) -> list[bytes]:
    """A worker-sized ``submitted`` event, split where the message id goes."""
    fields = {"event_id": f"{_MARK}-submitted", "message_id": _MARK, "campaign_id": "bench",
              "sender": "bench-otp", "occurred_at": datetime.now(UTC),
              "provider_message_id": "1234567890", "attempt": 1, "segments": 1,
              "encoding": "gsm7", "metadata": {"list": "bench"}}
    body = event_message_from_fields(settings.topology, Status.SUBMITTED, fields).body
    return body.split(_MARK.encode())


async def relay(settings: Settings, stop: asyncio.Event) -> None:
    """Relay until ``stop`` is set."""
    topology = settings.topology
    link = await PikaLink.open(settings.broker_url.get_secret_value(), "ics-sms bench relay")
    consumer: Channel = link.channel
    publisher = await open_channel(link.connection)
    parts = event_template(settings)
    exchange, routing_key = topology.events_exchange, Status.SUBMITTED.routing_key

    def on_confirm(frame: object) -> None:
        method = frame.method  # type: ignore[attr-defined]
        if isinstance(method, Basic.Ack):
            consumer.basic_ack(method.delivery_tag, multiple=method.multiple)
        else:
            consumer.basic_nack(method.delivery_tag, multiple=method.multiple, requeue=True)

    def on_message(_channel: Channel, _method: Basic.Deliver, properties: BasicProperties,
                   _body: bytes) -> None:
        message_id = properties.message_id.encode()
        publisher.basic_publish(
            exchange, routing_key, message_id.join(parts),
            BasicProperties(content_type="application/json", delivery_mode=2,
                            message_id=properties.message_id + "-submitted"),
            mandatory=True)

    try:
        await call(lambda done: publisher.confirm_delivery(on_confirm, callback=done))
        await call(lambda done: consumer.basic_qos(prefetch_count=settings.prefetch,
                                                   callback=done))
        consumer.basic_consume(topology.send_queue(Lane.SERVICE), on_message)
        await stop.wait()
    finally:
        await link.close()


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await relay(Settings(), stop)


if __name__ == "__main__":
    asyncio.run(_main())
