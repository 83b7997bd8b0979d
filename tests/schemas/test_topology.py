"""The RabbitMQ topology: one declaration of every name, argument and binding."""

from __future__ import annotations

import pytest

from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import (
    DELAY_TIERS_S,
    Binding,
    ExchangeType,
    QueueType,
    Topology,
)

CONTRACT = Topology()


def test_the_contract_names_without_a_namespace() -> None:
    assert CONTRACT.send_exchange == "sms.send"
    assert CONTRACT.events_exchange == "sms.events"
    assert CONTRACT.events_queue == "sms.events"
    assert CONTRACT.send_queue(Lane.SERVICE) == "sms.send.service"
    assert CONTRACT.send_queue(Lane.PROMOTIONAL) == "sms.send.promotional"
    assert CONTRACT.dead_exchange == "sms.dead"
    assert CONTRACT.dead_queue == "sms.dead"
    assert CONTRACT.retry_exchange == "sms.retry"
    assert CONTRACT.delay_queue(Lane.SERVICE, 5) == "sms.retry.service.5s"


def test_the_lanes_route_by_their_name() -> None:
    assert Topology.send_routing_key(Lane.SERVICE) == "service"
    assert Topology.send_routing_key(Lane.PROMOTIONAL) == "promotional"


def test_a_namespace_prefixes_every_exchange_and_queue() -> None:
    namespaced = Topology(namespace="t1.")
    for exchange, plain in zip(namespaced.exchanges(), CONTRACT.exchanges(), strict=True):
        assert exchange.name == "t1." + plain.name
    for queue, plain_q in zip(namespaced.queues(), CONTRACT.queues(), strict=True):
        assert queue.name == "t1." + plain_q.name


def test_a_namespace_leaves_routing_keys_alone() -> None:
    keys = {b.routing_key for b in Topology(namespace="t1.").bindings()}
    assert keys == {b.routing_key for b in CONTRACT.bindings()}


def test_the_exchange_types() -> None:
    types = {e.name: e.type for e in CONTRACT.exchanges()}
    assert types == {
        "sms.send": ExchangeType.DIRECT,
        "sms.retry": ExchangeType.DIRECT,
        "sms.events": ExchangeType.TOPIC,
        "sms.dead": ExchangeType.FANOUT,
    }
    assert all(e.durable for e in CONTRACT.exchanges())


def test_names_are_unique() -> None:
    queues = [q.name for q in CONTRACT.queues()]
    assert len(queues) == len(set(queues)) == len(CONTRACT.queue_names())
    exchanges = [e.name for e in CONTRACT.exchanges()]
    assert len(exchanges) == len(set(exchanges))


def test_there_is_a_delay_queue_per_lane_and_tier() -> None:
    expected = {f"sms.retry.{lane.value}.{tier}s" for lane in Lane for tier in DELAY_TIERS_S}
    assert expected <= CONTRACT.queue_names()
    assert CONTRACT.queue_names() - expected == {
        "sms.send.service", "sms.send.promotional", "sms.events", "sms.dead",
    }


@pytest.mark.parametrize("topology", [Topology(), Topology(queue_type=QueueType.CLASSIC)])
def test_every_queue_is_bound_and_every_binding_is_declared(topology: Topology) -> None:
    bound = {b.queue for b in topology.bindings()}
    assert bound == topology.queue_names()
    exchanges = {e.name for e in topology.exchanges()}
    assert {b.exchange for b in topology.bindings()} == exchanges


def test_the_bindings() -> None:
    bindings = set(CONTRACT.bindings())
    assert Binding("sms.send", "sms.send.service", "service") in bindings
    assert Binding("sms.send", "sms.send.promotional", "promotional") in bindings
    assert Binding("sms.events", "sms.events", "#") in bindings
    assert Binding("sms.dead", "sms.dead", "") in bindings
    for lane in Lane:
        for tier in DELAY_TIERS_S:
            assert Binding("sms.retry", f"sms.retry.{lane.value}.{tier}s",
                           f"{lane.value}.{tier}s") in bindings


@pytest.mark.parametrize("namespace", ["", "t1."])
@pytest.mark.parametrize("lane", list(Lane))
@pytest.mark.parametrize("tier", DELAY_TIERS_S)
def test_delay_queues_expire_back_into_their_lane(namespace: str, lane: Lane, tier: int) -> None:
    topology = Topology(namespace=namespace)
    queue = next(q for q in topology.queues() if q.name == topology.delay_queue(lane, tier))
    assert queue.arguments["x-message-ttl"] == tier * 1000
    # dead-lettered to the send exchange with the lane's key: lands in the lane's queue
    assert queue.arguments["x-dead-letter-exchange"] == topology.send_exchange
    routing_key = queue.arguments["x-dead-letter-routing-key"]
    assert Binding(topology.send_exchange, topology.send_queue(lane), routing_key) in set(
        topology.bindings()
    )


def test_the_retry_exchange_routes_each_delay_key_to_its_delay_queue() -> None:
    for lane in Lane:
        for tier in DELAY_TIERS_S:
            key = Topology.delay_routing_key(lane, tier)
            targets = [b.queue for b in CONTRACT.bindings()
                       if b.exchange == CONTRACT.retry_exchange and b.routing_key == key]
            assert targets == [CONTRACT.delay_queue(lane, tier)]


@pytest.mark.parametrize(
    ("delay_s", "tier"),
    [
        (0, 1),
        (0.2, 1),
        (1, 1),
        (4.99, 1),
        (5, 5),
        (14.9, 5),
        (15, 15),
        (59, 15),
        (60, 60),
        (299.9, 60),
        (300, 300),
        (3600, 300),
        (-1, 1),
    ],
)
def test_delay_tier_is_the_longest_tier_not_above_the_delay(delay_s: float, tier: int) -> None:
    assert Topology.delay_tier(delay_s) == tier


def test_delay_tiers_are_ascending() -> None:
    assert list(DELAY_TIERS_S) == sorted(set(DELAY_TIERS_S))


def test_send_queues_dead_letter_to_the_dead_exchange() -> None:
    for queue_type in QueueType:
        topology = Topology(queue_type=queue_type)
        for lane in Lane:
            queue = next(q for q in topology.queues() if q.name == topology.send_queue(lane))
            assert queue.arguments["x-dead-letter-exchange"] == topology.dead_exchange


def test_quorum_queues_carry_the_quorum_arguments() -> None:
    topology = Topology(queue_type=QueueType.QUORUM)
    for queue in topology.queues():
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.durable
    send = next(q for q in topology.queues() if q.name == "sms.send.service")
    assert send.arguments["x-delivery-limit"] > 0
    assert send.arguments["x-dead-letter-strategy"] == "at-least-once"
    assert send.arguments["x-overflow"] == "reject-publish"


def test_classic_queues_carry_no_quorum_only_arguments() -> None:
    quorum_only = {"x-delivery-limit", "x-dead-letter-strategy"}
    topology = Topology(queue_type=QueueType.CLASSIC)
    for queue in topology.queues():
        assert queue.arguments["x-queue-type"] == "classic"
        assert not quorum_only & queue.arguments.keys(), queue


def test_queue_arguments_are_not_shared_between_queues() -> None:
    queues = CONTRACT.queues()
    queues[0].arguments["x-test"] = 1
    assert all("x-test" not in q.arguments for q in queues[1:])
    assert all("x-test" not in q.arguments for q in CONTRACT.queues())


@pytest.mark.parametrize("namespace", ["down", "a.b"])
def test_a_namespace_must_end_with_a_separator(namespace: str) -> None:
    with pytest.raises(ValueError, match=r"must end with one of \. - _"):
        Topology(namespace=namespace)
