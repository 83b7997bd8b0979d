"""The one place that acks.

Handlers never ack. They hand the settler each delivery with the messages its outcome
requires (events, a retry copy, a dead-letter copy); the settler publishes all of them in
one confirm window and only then acknowledges the deliveries, with ``multiple`` acks over
the longest settled run of delivery tags. If the publish cannot be confirmed, the
deliveries go back to the queue (or, on a lost connection, the broker requeues them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import structlog

from ics_sms.broker.base import (
    Broker,
    BrokerError,
    ConnectionLost,
    Delivery,
    Outgoing,
    PublishFailed,
)

__all__ = ["AckTracker", "Settler"]

log = structlog.get_logger(__name__)

_PUBLISH_TRIES = 3


class AckTracker:
    """Acks settled deliveries with as few frames as possible.

    Delivery tags count per channel, so each channel keeps its own arrival order. A run
    of settled deliveries at the head of that order is acked with one ``multiple`` ack; a
    settled delivery behind an unsettled one (a slow sender's message) is acked on its
    own at once, so it never holds a prefetch slot.
    """

    __slots__ = ("_broker", "_channels", "generation")

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.generation = broker.generation
        self._channels: dict[int, _ChannelOrder] = {}

    def __repr__(self) -> str:
        return f"<AckTracker gen={self.generation} outstanding={len(self)}>"

    def __len__(self) -> int:
        return sum(len(order.order) for order in self._channels.values())

    def track(self, delivery: Delivery) -> None:
        order = self._channels.get(delivery.channel)
        if order is None:
            order = self._channels[delivery.channel] = _ChannelOrder()
        order.order.append(delivery)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        touched: dict[int, _ChannelOrder] = {}
        for delivery in deliveries:
            order = self._channels[delivery.channel]
            order.settled.add(delivery.tag)
            touched[delivery.channel] = order
        for order in touched.values():
            self._advance(order)
        for delivery in deliveries:
            order = self._channels[delivery.channel]
            if delivery.tag in order.settled and delivery.tag not in order.done:
                self._broker.ack(delivery)
                order.done.add(delivery.tag)

    def forget(self, delivery: Delivery) -> None:
        """The delivery was nacked on its own; it no longer blocks the run."""
        order = self._channels[delivery.channel]
        order.settled.add(delivery.tag)
        order.done.add(delivery.tag)
        self._advance(order)

    def _advance(self, channel: _ChannelOrder) -> None:
        last: Delivery | None = None
        order, settled, done = channel.order, channel.settled, channel.done
        while order and order[0].tag in settled:
            head = order.popleft()
            settled.discard(head.tag)
            if head.tag in done:
                done.discard(head.tag)
            else:
                last = head
        if last is not None:
            self._broker.ack(last, multiple=True)


class _ChannelOrder:
    """Arrival order of one channel's deliveries and which of them are settled."""

    __slots__ = ("done", "order", "settled")

    def __init__(self) -> None:
        self.order: deque[Delivery] = deque()
        self.settled: set[int] = set()
        self.done: set[int] = set()  # acked or nacked on their own, still in order


Later = Callable[[Delivery], Outgoing]
"""The delivery again, later (through a delay queue): what to publish instead of its
events when the broker keeps refusing them (e.g. a max-length policy on ``sms.events``)."""


class Settler:
    """Publishes the consequences of a batch, then acks it.

    When the consequences are refused repeatedly, the deliveries come back later through
    ``later`` (their records say what was done: the redelivery publishes the events again
    and never sends an SMS again); without ``later``, or if that is refused too, they go
    back to their queue.
    """

    def __init__(self, broker: Broker, tracker: AckTracker, later: Later | None = None) -> None:
        self._broker = broker
        self._tracker = tracker
        self._later = later
        self.settled = 0
        self.requeued = 0

    def __repr__(self) -> str:
        return f"<Settler settled={self.settled} requeued={self.requeued}>"

    async def settle(self, items: Sequence[tuple[Delivery, Sequence[Outgoing]]]) -> bool:
        """Publish every outgoing message, then ack; True when the batch is settled."""
        outgoing = [message for _, messages in items for message in messages]
        deliveries = [delivery for delivery, _ in items]
        for attempt in range(1, _PUBLISH_TRIES + 1):
            try:
                await self._broker.publish(outgoing)
            except PublishFailed as exc:
                log.warning("publish not confirmed, retrying", error=str(exc), attempt=attempt)
                continue
            except ConnectionLost:
                return False  # the broker requeues the deliveries of a lost connection
            self._tracker.ack(deliveries)
            self.settled += len(deliveries)
            return True
        if self._later is not None and await self._publish_later(deliveries):
            return False
        log.error("publish refused repeatedly; returning messages to the queue",
                  messages=len(deliveries))
        self.requeue(deliveries)
        return False

    async def _publish_later(self, deliveries: Sequence[Delivery]) -> bool:
        assert self._later is not None
        try:
            await self._broker.publish([self._later(delivery) for delivery in deliveries])
        except (PublishFailed, ConnectionLost):
            return False
        log.error("events refused repeatedly; the messages come back through a delay queue "
                  "to publish them again (nothing is sent again)", messages=len(deliveries))
        self._tracker.ack(deliveries)
        self.requeued += len(deliveries)
        return True

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            try:
                self._broker.nack(delivery, requeue=True)
            except BrokerError:
                return
            self._tracker.forget(delivery)
        self.requeued += len(deliveries)
