"""Reading a stage's events queue, the way an analytics consumer would.

Every event goes to a :class:`~ics_sms.demo.tracker.DemoTracker` (accounting, duplicates,
publish-to-event latencies, as read) and is counted per campaign and status, with the
instant the first and the last of each status was read. For ``submitted`` events of
tracked messages the reader also keeps publish-to-``occurred_at`` (the worker's instant of
ICS acceptance): the difference between the two latencies is the events path. Acks are
``multiple``, one per burst.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ics_sms.broker.base import Broker, Consumer, Delivery
from ics_sms.broker.connect import open_broker
from ics_sms.demo.tracker import DemoTracker
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.settings import Settings

__all__ = ["EventReader"]

_PREFETCH = 4000


class EventReader:
    """Consumes ``sms.events`` of one namespace into a tracker."""

    def __init__(self, tracker: DemoTracker | None = None) -> None:
        self.tracker = tracker or DemoTracker()
        self.by_campaign: Counter[tuple[str | None, str]] = Counter()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._broker: Broker | None = None
        self._consumer: Consumer | None = None
        self.occurred_latency_s: list[float] = []
        self._unacked: Delivery | None = None
        self._wall_to_monotonic = time.monotonic() - time.time()

    def __repr__(self) -> str:
        return f"<EventReader events={self.tracker.counts.total()} broker={self._broker!r}>"

    async def start(self, settings: Settings) -> None:
        """Connect, declare the namespace's topology and start consuming its events."""
        self._broker = await open_broker(settings, name="ics-sms bench events")
        await self._broker.declare(settings.topology)
        self._consumer = await self._broker.consume(settings.topology.events_queue, _PREFETCH,
                                                    self._on_delivery)

    def count(self, status: str, campaign: str | None = None) -> int:
        """Distinct events of ``status`` read (of one campaign, when given)."""
        if campaign is None:
            return self.tracker.counts.get(status, 0)
        return self.by_campaign.get((campaign, status), 0)

    def _on_delivery(self, delivery: Delivery) -> None:
        event = ReceiptEvent.model_validate_json(delivery.body)
        before = self.tracker.duplicates
        self.tracker.record(event)
        if self.tracker.duplicates == before:
            now = time.monotonic()
            status = event.status.value
            self.by_campaign[(event.campaign_id, status)] += 1
            self.first.setdefault(status, now)
            self.last[status] = now
            self._note_occurred(event)
        if self._unacked is None:
            asyncio.get_running_loop().call_soon(self._ack)
        self._unacked = delivery

    def _note_occurred(self, event: ReceiptEvent) -> None:
        published = self.tracker.published_at.get(event.message_id)
        if published is not None and event.status is Status.SUBMITTED:
            occurred = event.occurred_at.timestamp() + self._wall_to_monotonic
            self.occurred_latency_s.append(occurred - published)

    def _ack(self) -> None:
        delivery, self._unacked = self._unacked, None
        if delivery is not None and self._broker is not None:
            self._broker.ack(delivery, multiple=True)

    async def close(self) -> None:
        if self._broker is not None:
            self._ack()
            await self._broker.close()
            self._broker = None
