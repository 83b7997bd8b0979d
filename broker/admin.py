"""Operator-side helpers that run outside an event loop (demo, benchmarks, tests)."""

from __future__ import annotations

import pika

from ics_sms.schemas.topology import Topology

__all__ = ["declare_topology", "delete_topology"]


def declare_topology(url: str, topology: Topology) -> None:
    """Declare every exchange, queue and binding of ``topology`` (scripts and tests; the
    services declare through their own :class:`~ics_sms.broker.base.Broker`)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for exchange in topology.exchanges():
            channel.exchange_declare(exchange.name, exchange.type.value, durable=True)
        for queue in topology.queues():
            channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        for binding in topology.bindings():
            channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
    finally:
        connection.close()


def delete_topology(url: str, topology: Topology) -> None:
    """Delete every queue and exchange of ``topology`` (a namespace that has served)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in topology.queues():
            channel.queue_delete(queue.name)
        for exchange in topology.exchanges():
            channel.exchange_delete(exchange.name)
    finally:
        connection.close()
