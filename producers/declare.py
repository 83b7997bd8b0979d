"""Declare the :class:`~ics_sms.schemas.topology.Topology` with kombu entities, on a kombu
channel."""

from __future__ import annotations

from typing import Any

import kombu.entity

from ics_sms.schemas.topology import Binding, Exchange, Queue, Topology

__all__ = ["declare_topology", "kombu_exchange", "kombu_queue"]

# kombu is untyped: its classes are used through these Any-typed names.
_KombuExchange: Any = kombu.entity.Exchange
_KombuQueue: Any = kombu.entity.Queue


def kombu_exchange(exchange: Exchange) -> Any:
    """The kombu ``Exchange`` of one declared exchange (durable, never auto-deleted)."""
    return _KombuExchange(exchange.name, type=exchange.type.value, durable=exchange.durable,
                          auto_delete=False)


def kombu_queue(queue: Queue) -> Any:
    """The kombu ``Queue`` of one declared queue, with its arguments (queue type, DLX...)."""
    return _KombuQueue(queue.name, durable=queue.durable, auto_delete=False, exclusive=False,
                       queue_arguments=dict(queue.arguments))


def _bind(channel: Any, binding: Binding) -> None:
    channel.queue_bind(queue=binding.queue, exchange=binding.exchange,
                       routing_key=binding.routing_key)


def declare_topology(channel: Any, topology: Topology) -> None:
    """Declare every exchange, queue and binding; idempotent on an existing topology."""
    for exchange in topology.exchanges():
        kombu_exchange(exchange).declare(channel=channel)
    for queue in topology.queues():
        kombu_queue(queue).queue_declare(channel=channel)
    for binding in topology.bindings():
        _bind(channel, binding)
