"""Operator-side helpers that run outside an event loop (demo, benchmarks, tests)."""

from __future__ import annotations

import pika

from schemas.topology import Topology

__all__ = ["delete_topology"]


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
