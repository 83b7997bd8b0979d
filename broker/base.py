"""The broker interface every service uses, on RabbitMQ (pika) or in process (memory://).

Services never touch a client library directly: they publish batches that return only
once the broker confirmed every message, and consume :class:`Delivery` objects that are
settled in one place (see ``ics_sms.workers.settle``).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ics_sms.schemas.topology import Topology

__all__ = [
    "Broker",
    "BrokerError",
    "ConnectionLost",
    "Consumer",
    "Delivery",
    "Outgoing",
    "PublishFailed",
    "TopologyConflict",
]


class BrokerError(Exception):
    """Something went wrong talking to the broker."""


class ConnectionLost(BrokerError):
    """The connection or channel closed; unconfirmed publishes are unknown, deliveries void."""


class PublishFailed(BrokerError):
    """The broker refused (nack) or returned (unroutable) at least one message of a batch."""


class TopologyConflict(BrokerError):
    """An existing exchange or queue has other arguments than the declaration."""


@dataclass(slots=True)
class Outgoing:
    """A message to publish: persistent, JSON, with optional headers."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] | None = None
    message_id: str | None = None


@dataclass(slots=True)
class Delivery:
    """A message received from a queue. ``tag`` is only valid on its ``generation``."""

    body: bytes
    exchange: str
    routing_key: str
    tag: int
    redelivered: bool
    generation: int
    queue: str
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    channel: int = 0
    """The channel it came on: delivery tags count per channel."""


OnDelivery = Callable[[Delivery], None]


class Consumer(abc.ABC):
    """A running subscription to one queue."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop receiving new deliveries (those already received stay unsettled)."""


class Broker(abc.ABC):
    """One connection to a broker: publishing with confirms, consuming with manual acks."""

    generation: int = 0

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def closed(self) -> asyncio.Future[None]:
        """Resolves when the connection ends (with :class:`ConnectionLost` if unexpected)."""

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    @abc.abstractmethod
    async def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding; raises :class:`TopologyConflict`."""

    @abc.abstractmethod
    async def declare_tail_queue(self, exchange: str, routing_keys: Sequence[str]) -> str:
        """A private queue bound to ``exchange`` that lives as long as this connection."""

    @abc.abstractmethod
    async def queue_depth(self, queue: str) -> int:
        """Messages ready (not delivered) in ``queue``."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish and return once the broker confirmed all (raises otherwise)."""

    @abc.abstractmethod
    async def consume(self, queue: str, prefetch: int, on_delivery: OnDelivery) -> Consumer:
        """Start delivering messages of ``queue`` to ``on_delivery`` (called in the loop)."""

    @abc.abstractmethod
    def ack(self, delivery: Delivery, *, multiple: bool = False) -> None: ...

    @abc.abstractmethod
    def nack(self, delivery: Delivery, *, requeue: bool) -> None: ...

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
