"""The producer library with several broker addresses (kombu failover, in the order given)."""

from __future__ import annotations

import pytest

from ics_sms.producers.errors import BrokerUnavailable, ProducerError
from ics_sms.producers.publisher import Producer
from ics_sms.producers.retry import RetryPolicy
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology
from tests.chaos.harness import free_port
from tests.faults import ProxyThread, url_at
from tests.producers.test_publisher import SENDERS, drain, request

PASSWORD = "producer-s3cret"


def test_a_dead_first_address_is_skipped(amqp_settings: Settings, rabbitmq_url: str,
                                         topology: Topology) -> None:
    url = f"{url_at(rabbitmq_url, free_port(), password=PASSWORD)},{rabbitmq_url}"
    with Producer(url, topology, SENDERS, retry=RetryPolicy(0)) as producer:
        producer.publish(request(1))
        assert PASSWORD not in repr(producer)
    [got] = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert got.properties.message_id == "m-1"


def test_losing_the_node_mid_bulk_moves_to_the_next_address(
        amqp_settings: Settings, rabbitmq_url: str, topology: Topology,
        broker_proxy: ProxyThread) -> None:
    url = f"{url_at(rabbitmq_url, broker_proxy.port)},{rabbitmq_url}"
    with Producer(url, topology, SENDERS, retry=RetryPolicy(3, 0.1, 0.1, 0.5)) as producer:
        assert f":{broker_proxy.port}" in producer.connection.as_uri()  # in order: the first

        def cut_once(_confirmed: int) -> None:
            if not broker_proxy.cut_now:
                broker_proxy.cut()  # the node dies: its connection drops, new ones are refused

        count = producer.publish_many((request(i) for i in range(3000)), on_progress=cut_once)
        assert count == 3000
        assert "reconnects=1" in repr(producer)
        assert f":{broker_proxy.port}" not in producer.connection.as_uri()
    ids = {g.properties.message_id for g in drain(rabbitmq_url,
                                                  topology.send_queue(Lane.SERVICE))}
    assert ids == {f"m-{i}" for i in range(3000)}  # at least once: duplicates allowed


def test_every_address_dead_is_one_error_without_passwords(topology: Topology) -> None:
    first, second = free_port(), free_port()
    url = (f"amqp://guest:{PASSWORD}@127.0.0.1:{first}/,"
           f"amqp://guest:{PASSWORD}@127.0.0.1:{second}/")
    producer = Producer(url, topology, retry=RetryPolicy(max_retries=1, interval_start_s=0.01),
                        connect_timeout_s=1)
    with pytest.raises(BrokerUnavailable) as caught:
        producer.connect()
    text = str(caught.value)
    assert f"guest:***@127.0.0.1:{first}/,amqp://guest:***@127.0.0.1:{second}/" in text
    assert PASSWORD not in text


def test_every_address_must_be_amqp(topology: Topology) -> None:
    with pytest.raises(ProducerError, match="amqp:// or amqps://, not redis://"):
        Producer(f"amqp://guest:{PASSWORD}@h1:5672/,redis://h2:6379/", topology)
