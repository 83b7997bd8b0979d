"""Tailing receipt events (``ics-sms events``) on real RabbitMQ."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pika
import pytest
from click.testing import CliRunner, Result

from ics_sms.broker.codec import event_message
from ics_sms.broker.connect import open_broker
from ics_sms.broker.memory import MemoryBroker
from ics_sms.callbacks.tail import EventFilter, tail_events
from ics_sms.cli import events_cmd
from ics_sms.schemas.messages import ReceiptEvent, Status, make_event_id
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology

AT = datetime(2025, 11, 27, 8, 0, tzinfo=UTC)


def event(message_id: str, status: Status, campaign: str | None = "spring") -> ReceiptEvent:
    extra = {"error_code": "906", "error": "Header blocked by DLT"} \
        if status is Status.FAILED else {}
    return ReceiptEvent(event_id=make_event_id(message_id, status), message_id=message_id,
                        campaign_id=campaign, status=status, occurred_at=AT, sender="acme-otp",
                        **extra)  # type: ignore[arg-type]


STREAM = [
    event("m-1", Status.DELIVERED),
    event("m-2", Status.FAILED),
    event("m-3", Status.DELIVERED, campaign="autumn"),
    event("m-4", Status.CLICKED),
    event("m-5", Status.DELIVERED),
    event("m-6", Status.FAILED, campaign="autumn"),
]


def publish(url: str, topology: Topology, events: list[ReceiptEvent]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for item in events:
            message = event_message(topology, item)
            channel.basic_publish(message.exchange, message.routing_key, message.body,
                                  pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()


class TestEventFilter:
    def test_no_status_binds_everything(self) -> None:
        assert EventFilter().routing_keys() == ["sms.#"]

    def test_statuses_bind_their_keys(self) -> None:
        keys = EventFilter(frozenset({Status.FAILED, Status.CLICKED})).routing_keys()
        assert keys == ["sms.clicked", "sms.failed"]

    def test_matches_status_and_campaign(self) -> None:
        only = EventFilter(frozenset({Status.DELIVERED}), campaign="spring")
        assert [e.message_id for e in STREAM if only.matches(e)] == ["m-1", "m-5"]


async def test_tail_shows_matching_events_and_leaves_the_analytics_queue_alone(
    amqp_settings: Settings, rabbitmq_url: str, topology: Topology
) -> None:
    broker = await open_broker(amqp_settings, name="test tail")
    shown: list[ReceiptEvent] = []
    ready = asyncio.Event()
    tail = asyncio.create_task(tail_events(
        broker, topology, EventFilter(frozenset({Status.DELIVERED, Status.FAILED}), "spring"),
        shown.append, count=3, on_ready=lambda _queue: ready.set()))
    await asyncio.wait_for(ready.wait(), timeout=15)
    await asyncio.to_thread(publish, rabbitmq_url, topology, STREAM)
    assert await asyncio.wait_for(tail, timeout=15) == 3
    assert [e.message_id for e in shown] == ["m-1", "m-2", "m-5"]
    assert await broker.queue_depth(topology.events_queue) == len(STREAM)
    await broker.close()


async def test_tail_works_on_the_embedded_broker_and_leaves_no_queue() -> None:
    broker = MemoryBroker("memory://tail-test")
    await broker.connect()
    topology = Topology()
    seen: list[ReceiptEvent] = []

    async def publish_when_ready(queue: str) -> None:
        await broker.publish([event_message(topology, event("m1", Status.DELIVERED))])

    ready: list[asyncio.Task[None]] = []
    count = await tail_events(broker, topology, EventFilter(), seen.append, count=1,
                              on_ready=lambda q: ready.append(
                                  asyncio.create_task(publish_when_ready(q))))
    assert count == 1 and seen[0].message_id == "m1"
    await broker.close()
    assert not [name for name in broker.hub.queues if name.startswith("tail.")]


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def tail_ready(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Set once the command's tail queue is bound (the moment the command logs)."""
    ready = threading.Event()
    monkeypatch.setattr(events_cmd, "_ready", lambda _queue: ready.set())
    yield ready


def run_events(settings: Settings, rabbitmq_url: str, ready: threading.Event,
               *args: str) -> Result:
    """Run ``ics-sms events ARGS`` while STREAM is published; return its result."""
    env = {"ICS_SMS_BROKER_URL": rabbitmq_url, "ICS_SMS_NAMESPACE": settings.namespace}
    results: list[Result] = []
    command = threading.Thread(target=lambda: results.append(
        CliRunner().invoke(events_cmd.events_command, list(args), env=env)))
    command.start()
    try:
        assert ready.wait(timeout=30), "the events command did not start tailing"
        publish(rabbitmq_url, settings.topology, STREAM)
    finally:
        command.join(timeout=30)
    assert not command.is_alive(), "the events command did not stop after --count"
    (result,) = results
    assert result.exit_code == 0, result.output
    return result


def test_events_json_lines_with_status_filter(
    amqp_settings: Settings, rabbitmq_url: str, tail_ready: threading.Event
) -> None:
    result = run_events(amqp_settings, rabbitmq_url, tail_ready,
                        "--json", "--status", "failed", "--status", "clicked", "--count", "3")
    lines = result.stdout.splitlines()
    assert [ReceiptEvent.model_validate(orjson.loads(line)) for line in lines] == [
        STREAM[1], STREAM[3], STREAM[5]]


def test_events_pretty_with_campaign_filter(
    amqp_settings: Settings, rabbitmq_url: str, tail_ready: threading.Event
) -> None:
    result = run_events(amqp_settings, rabbitmq_url, tail_ready,
                        "--campaign", "autumn", "--count", "2")
    assert result.stdout.splitlines() == [
        "2025-11-27 08:00:00  delivered  m-3  campaign=autumn  sender=acme-otp",
        "2025-11-27 08:00:00  failed     m-6  campaign=autumn  sender=acme-otp  [906] Header "
        "blocked by DLT",
    ]


def test_events_unreachable_broker_is_one_line() -> None:
    env = {"ICS_SMS_BROKER_URL": "amqp://guest:guest@127.0.0.1:9/",
           "ICS_SMS_CONNECT_RETRY_S": "0"}
    result = CliRunner().invoke(events_cmd.events_command, ["--count", "1"], env=env)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "unreachable" in result.output
