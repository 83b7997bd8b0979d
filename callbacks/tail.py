"""Tail receipt events as they are published (what ``ics-sms events`` shows).

The tail reads from a queue of its own: server-named, exclusive and auto-delete, bound to
the events exchange with ``sms.#`` or one ``sms.<status>`` key per wanted status. So it
never takes events from the durable analytics queue ``sms.events`` and leaves nothing
behind when it stops. Each event is acked once the sink has shown it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from ics_sms.broker.base import Broker, BrokerError, ConnectionLost, Delivery
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.topology import Topology

__all__ = ["ALL_EVENTS_KEY", "EventFilter", "EventSink", "tail_events"]

log = structlog.get_logger(__name__)

ALL_EVENTS_KEY = "sms.#"

EventSink = Callable[[ReceiptEvent], None]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to show: statuses (all when empty) and a campaign (any when None)."""

    statuses: frozenset[Status] = frozenset()
    campaign: str | None = None

    def routing_keys(self) -> list[str]:
        """Bind only what is wanted, so the broker filters statuses for us."""
        if not self.statuses:
            return [ALL_EVENTS_KEY]
        return sorted(status.routing_key for status in self.statuses)

    def matches(self, event: ReceiptEvent) -> bool:
        if self.statuses and event.status not in self.statuses:
            return False
        return self.campaign is None or event.campaign_id == self.campaign


class _Tail:
    """Shows matching deliveries, acks each after the sink, stops after ``count``."""

    def __init__(self, broker: Broker, event_filter: EventFilter, sink: EventSink,
                 count: int | None) -> None:
        self._broker = broker
        self._filter = event_filter
        self._sink = sink
        self._count = count
        self.shown = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<EventTail shown={self.shown} count={self._count} filter={self._filter}>"

    def on_delivery(self, delivery: Delivery) -> None:
        if self.done.done():
            return  # past --count: left unacked, it goes away with the queue
        try:
            event = ReceiptEvent.model_validate_json(delivery.body)
        except ValidationError:
            log.warning("not a receipt event, skipped", routing_key=delivery.routing_key)
            self._broker.ack(delivery)
            return
        if self._filter.matches(event):
            try:
                self._sink(event)
            except Exception as exc:  # e.g. a closed pipe: stop the tail with that error
                self.done.set_exception(exc)
                return
            self.shown += 1
        self._broker.ack(delivery)
        if self._count is not None and self.shown >= self._count:
            self.done.set_result(None)


async def _until(stop: asyncio.Event | None) -> None:
    """Return when ``stop`` is set (never without one)."""
    await (stop if stop is not None else asyncio.Event()).wait()


async def tail_events(
    broker: Broker,
    topology: Topology,
    event_filter: EventFilter,
    sink: EventSink,
    *,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    prefetch: int = 200,
) -> int:
    """Show events until ``count`` were shown or ``stop`` is set; returns how many.

    Declares the topology first. ``on_ready`` gets the tail queue's name once it is bound
    and consumed. Raises :class:`BrokerError` when the broker cannot tail or the
    connection is lost, and what the sink raised.
    """
    await broker.declare(topology)
    queue = await broker.declare_tail_queue(topology.events_exchange,
                                            event_filter.routing_keys())
    tail = _Tail(broker, event_filter, sink, count)
    consumer = await broker.consume(queue, prefetch, tail.on_delivery)
    if on_ready is not None:
        on_ready(queue)
    stopped = asyncio.create_task(_until(stop))
    try:
        await asyncio.wait([tail.done, broker.closed, stopped],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if tail.done.done():
        tail.done.result()  # raises what the sink raised
    elif broker.closed.done():
        broker.closed.result()  # raises ConnectionLost when the connection dropped
        raise ConnectionLost("the broker connection closed")
    with contextlib.suppress(BrokerError):
        await consumer.cancel()
    return tail.shown
