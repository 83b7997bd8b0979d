"""The producer library: validation, lanes, confirms, recovery; on real RabbitMQ where it counts."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest
from amqp import spec
from amqp.basic_message import Message
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from pydantic import SecretStr

from ics_sms.broker.admin import declare_topology

# Submodules, not the package: under a bare `pytest` (not `python -m pytest`) the folder
# tests/producers/ shadows the package itself; its submodules still resolve.
from ics_sms.producers.errors import (
    BrokerUnavailable,
    InvalidRequest,
    ProducerError,
    PublishError,
    TopologyMismatch,
)
from ics_sms.producers.framing import PublishFramer
from ics_sms.producers.publisher import Producer, validate_request
from ics_sms.producers.retry import RetryPolicy
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane, Sender, Senders, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Queue, QueueType, Topology

SERVICE = Sender(name="acme-otp", type="service_implicit", sender_id="ACMEIN", username="acme",
                 token=SecretStr("service-token-123"))
PROMO = Sender(name="acme-promo", type="promotional", sender_id="123456", username="acme",
               token=SecretStr("promo-token-1234"))
SENDERS = Senders().add(SERVICE).add(PROMO)


def request(n: int = 1, **fields: Any) -> dict[str, Any]:
    return {"message_id": f"m-{n}", "campaign_id": "spring", "to": "+919812345678",
            "text": f"Hello {n}", **fields}


# -- helpers on the real broker (pika, independent of the code under test) ---------------
@dataclass
class Got:
    properties: Any
    body: dict[str, Any]


def drain(url: str, queue: str) -> list[Got]:
    """Every message now in ``queue``, taken off it (confirmed messages are all counted)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        got: list[Got] = []
        if count:
            channel.basic_qos(prefetch_count=1000)
            for _method, properties, body in channel.consume(queue, auto_ack=True):
                got.append(Got(properties, json.loads(body)))
                if len(got) == count:
                    break
            channel.cancel()
        assert channel.basic_get(queue, auto_ack=True)[0] is None
        return got
    finally:
        connection.close()


@pytest.fixture
def producer(amqp_settings: Settings, rabbitmq_url: str, topology: Topology
             ) -> Iterator[Producer]:
    with Producer(rabbitmq_url, topology, SENDERS, retry=RetryPolicy(3, 0.1, 0.1, 0.5)) as p:
        yield p


# -- frames: identical to what py-amqp would write ---------------------------------------
class _Capture:
    frame_max = 4096
    bytes_sent = 0

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += bytes(chunk)


@pytest.mark.parametrize("headers", [None, {"x-ics-publish-id": "4f2a9c01e3b71"}])
@pytest.mark.parametrize("size", [0, 10, 4088, 4089, 20000])
def test_frames_equal_py_amqp_encoding(size: int, headers: dict[str, str] | None) -> None:
    body = b"x" * size
    capture = _Capture()
    write = frame_writer(capture, capture)
    write(1, 7, spec.Basic.Publish, dumps("Bssbb", (0, "ns.sms.send", "service", True, False)),
          Message(body, content_type="application/json", delivery_mode=2, message_id="m-1",
                  **({"application_headers": headers} if headers else {})))

    ours = PublishFramer(7, capture.frame_max).encode("ns.sms.send", "service", "m-1", body,
                                                      headers)

    assert ours == bytes(capture.data)


# -- retry policy --------------------------------------------------------------------------
def test_retry_policy_within_a_budget() -> None:
    assert RetryPolicy.within(0).max_retries == 0
    policy = RetryPolicy.within(30)
    assert policy.budget_s >= 30
    assert RetryPolicy(policy.max_retries - 1).budget_s < 30
    assert policy.intervals()[:3] == [0.5, 1.5, 2.5] and max(policy.intervals()) == 5.0


# -- validation and lanes (no broker) ------------------------------------------------------
def test_validation_names_field_and_reason() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request(to="12345"))
    assert caught.value.problems[0].startswith("to: ")
    assert "E.164" in str(caught.value)


def test_validation_refuses_other_types() -> None:
    with pytest.raises(InvalidRequest, match="expected a SendRequest or a mapping, got list"):
        validate_request([1, 2])


@pytest.mark.parametrize(
    ("senders", "sender", "lane"),
    [
        (SENDERS, "acme-promo", Lane.PROMOTIONAL),
        (SENDERS, "acme-otp", Lane.SERVICE),
        (SENDERS, None, Lane.SERVICE),  # the default sender (the first added)
        (Senders().add(PROMO), None, Lane.PROMOTIONAL),
        (SENDERS, "nobody", Lane.SERVICE),  # unknown: the worker rejects it
        (None, "acme-promo", Lane.SERVICE),  # no senders file at all
    ],
)
def test_lane_of_the_sender(senders: Senders | None, sender: str | None, lane: Lane) -> None:
    producer = Producer("amqp://guest:guest@127.0.0.1:1/", Topology(), senders)
    assert producer.lane_for(SendRequest.model_validate(request(sender=sender))) is lane


def test_only_amqp_urls() -> None:
    with pytest.raises(ProducerError, match="amqp:// or amqps://, not memory://"):
        Producer("memory://", Topology())


def test_unreachable_broker_is_one_error_without_password() -> None:
    producer = Producer("amqp://guest:s3cret@127.0.0.1:1/", Topology(),
                        retry=RetryPolicy(max_retries=0), connect_timeout_s=1)
    with pytest.raises(BrokerUnavailable) as caught:
        producer.connect()
    assert "amqp://guest:***@127.0.0.1:1/" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(producer)


# -- on RabbitMQ -----------------------------------------------------------------------------
def test_publish_lands_in_the_lane_persistent_json(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    producer.publish(request(1, sender="acme-promo", metadata={"customer": 7}))
    producer.publish(SendRequest.model_validate(request(2)))

    [promo] = drain(rabbitmq_url, topology.send_queue(Lane.PROMOTIONAL))
    [service] = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert promo.properties.delivery_mode == 2
    assert promo.properties.content_type == "application/json"
    assert promo.properties.message_id == "m-1"
    assert promo.body == {"schema_version": 1, "message_id": "m-1", "campaign_id": "spring",
                          "to": "+919812345678", "text": "Hello 1", "sender": "acme-promo",
                          "metadata": {"customer": 7}}
    assert service.properties.message_id == "m-2" and "sender" not in service.body
    assert producer.published == 2


def test_publish_many_confirms_everything_and_reports_progress(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    requests = [request(i, sender="acme-promo" if i % 3 == 0 else None) for i in range(3000)]
    progress: list[int] = []

    count = producer.publish_many(iter(requests), on_progress=progress.append)

    assert count == 3000
    assert progress == sorted(progress) and progress[-1] == 3000
    promo = drain(rabbitmq_url, topology.send_queue(Lane.PROMOTIONAL))
    service = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert len(promo) == 1000 and len(service) == 2000
    assert [g.properties.message_id for g in service][:3] == ["m-1", "m-2", "m-4"]


def test_unknown_sender_goes_to_the_service_lane(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    producer.publish(request(1, sender="nobody"))

    [got] = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert got.body["sender"] == "nobody"
    assert drain(rabbitmq_url, topology.send_queue(Lane.PROMOTIONAL)) == []


def test_invalid_request_raises_before_anything_is_sent(
        amqp_settings: Settings, rabbitmq_url: str, topology: Topology) -> None:
    declare_topology(rabbitmq_url, topology)
    producer = Producer(rabbitmq_url, topology, SENDERS)
    with pytest.raises(InvalidRequest, match="text: "):
        producer.publish(request(1, text="   "))
    assert "connected=False" in repr(producer)  # it never even connected
    assert drain(rabbitmq_url, topology.send_queue(Lane.SERVICE)) == []


def test_oversized_metadata_is_refused_before_anything_is_sent(
        amqp_settings: Settings, rabbitmq_url: str, topology: Topology) -> None:
    declare_topology(rabbitmq_url, topology)
    producer = Producer(rabbitmq_url, topology, SENDERS)
    with pytest.raises(InvalidRequest) as caught:
        producer.publish(request(1, metadata={"blob": "x" * 5_000_000}))
    [problem] = caught.value.problems
    assert problem.startswith("metadata: is 5000011 bytes as JSON, more than 4096")
    assert "connected=False" in repr(producer)
    assert drain(rabbitmq_url, topology.send_queue(Lane.SERVICE)) == []


def test_publish_many_stops_at_an_invalid_request_with_its_index(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    requests = [request(0), request(1), request(2, to="not a number"), request(3)]

    with pytest.raises(InvalidRequest) as caught:
        producer.publish_many(requests)

    assert caught.value.index == 2 and caught.value.confirmed == 2
    assert caught.value.problems[0].startswith("to: ")
    got = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert [g.properties.message_id for g in got] == ["m-0", "m-1"]


def test_recovers_when_the_connection_is_closed_under_it(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    producer.publish(request(1))
    producer.connection.connection.close()  # the py-amqp connection underneath kombu

    producer.publish(request(2))

    got = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert [g.properties.message_id for g in got] == ["m-1", "m-2"]
    assert "reconnects=1" in repr(producer)


def test_recovers_mid_bulk_and_confirms_everything(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    def cut_once(confirmed: int) -> None:
        if "reconnects=0" in repr(producer):
            producer.connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)

    count = producer.publish_many((request(i) for i in range(5000)), on_progress=cut_once)

    assert count == 5000
    ids = [g.properties.message_id for g in drain(rabbitmq_url,
                                                   topology.send_queue(Lane.SERVICE))]
    assert set(ids) == {f"m-{i}" for i in range(5000)}  # at least once: duplicates allowed
    assert "reconnects=1" in repr(producer)


def test_unroutable_message_is_an_error_not_a_loss(
        producer: Producer, rabbitmq_url: str, topology: Topology) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().queue_delete(topology.send_queue(Lane.PROMOTIONAL))
    connection.close()

    with pytest.raises(PublishError, match="unroutable") as caught:
        producer.publish_many([request(1), request(2, sender="acme-promo"), request(3)])

    assert caught.value.confirmed == 1
    producer.publish(request(4))  # the producer starts afresh after a failure
    got = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert [g.properties.message_id for g in got][-1] == "m-4"


@dataclass(frozen=True)
class TinySendQueues(Topology):
    """Send queues that hold five messages and refuse (nack) more."""

    def queues(self) -> list[Queue]:
        sends = {self.send_queue(lane) for lane in Lane}
        limit = {"x-max-length": 5, "x-overflow": "reject-publish"}
        return [Queue(q.name, {**q.arguments, **limit}) if q.name in sends else q
                for q in super().queues()]


def test_nacked_messages_are_not_reported_as_published(
        amqp_settings: Settings, rabbitmq_url: str, namespace: str) -> None:
    tiny = TinySendQueues(namespace=namespace, queue_type=QueueType.CLASSIC)
    with Producer(rabbitmq_url, tiny, SENDERS) as producer, \
            pytest.raises(PublishError, match="nack") as caught:
        producer.publish_many(request(i) for i in range(10))

    assert caught.value.confirmed == 5
    assert len(drain(rabbitmq_url, tiny.send_queue(Lane.SERVICE))) == 5


def test_from_settings_reads_namespace_and_senders(
        amqp_settings: Settings, rabbitmq_url: str, topology: Topology) -> None:
    save_senders(amqp_settings.senders_file, Senders().add(PROMO))
    with Producer.from_settings(amqp_settings) as producer:
        assert producer.topology == topology
        producer.publish(request(1))

    [got] = drain(rabbitmq_url, topology.send_queue(Lane.PROMOTIONAL))
    assert got.properties.message_id == "m-1"


def test_a_conflicting_topology_is_one_clear_error(
        amqp_settings: Settings, rabbitmq_url: str, topology: Topology) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().queue_declare(topology.send_queue(Lane.SERVICE), durable=True,
                                       arguments={"x-queue-type": "classic"})
    connection.close()

    producer = Producer(rabbitmq_url, topology, SENDERS)
    with pytest.raises(TopologyMismatch, match="PRECONDITION_FAILED - inequivalent arg"):
        producer.connect()
    assert "connected=False" in repr(producer)
