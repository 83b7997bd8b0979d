"""Per-sender rate limiting for the worker: the one door to the fleet-wide rate store.

``rate_per_s`` is the most records per second ICS gets for a sender from all workers
together (:mod:`ics_sms.stores.rates` keeps each sender's schedule and pauses, in Redis or
in this process for ``memory://``). A batch asks once for its number of records and waits
until its moment; a 429 or refused credentials seen by any worker pause the sender in
every worker.
"""

from __future__ import annotations

import asyncio
import uuid

from ics_sms.schemas.senders import Sender
from ics_sms.stores.rates import Grant, RateStore
from ics_sms.workers.notices import ThrottledLog

__all__ = ["BATCH_SPAN_S", "PACED", "SenderRates"]

PACED = ThrottledLog("sender paced by its rate_per_s", level="info", amount_field="waited_s")
"""One line per sender at most every few seconds while its ``rate_per_s`` (not ICS, not
the batch size) is what holds messages back: how many waited, and for how long in all."""

BATCH_SPAN_S = 1.0
"""A batch costs at most this much of its sender's rate (``rate_per_s * BATCH_SPAN_S``
records, at least one): ICS never gets more than a second's worth in one request. The
figure of one second is precise to one batch, so a sender whose per-second figure matters
wants ``ICS_SMS_BATCH_MAX`` well under its rate (docs/performance.md, fleet rate)."""


class SenderRates:
    """Asks the rate store for a batch's records, waits for the moment it was granted, and
    records the pauses ICS asks for."""

    __slots__ = ("fleet", "name", "store")

    def __init__(self, store: RateStore, name: str = "") -> None:
        self.store = store
        self.name = name or f"worker-{uuid.uuid4().hex[:12]}"
        """How this worker names itself to the rate store (one name per process)."""
        self.fleet: dict[str, int] = {}
        """Workers sending for each sender, as the rate store last said."""

    def __repr__(self) -> str:
        return f"<SenderRates {self.store!r}>"

    @staticmethod
    def batch_cap(sender: Sender) -> int:
        """The most records one batch of ``sender`` may hold (``BATCH_SPAN_S`` of its rate)."""
        return max(1, int(sender.rate_per_s * BATCH_SPAN_S))

    async def acquire(self, sender: Sender, count: int) -> Grant:
        """Reserve ``count`` records of the sender's rate and sleep until they may go.
        A grant that is not :attr:`~Grant.granted` (credentials refused) returns at once:
        the caller holds its messages. Raises RateStoreError."""
        grant = await self.store.acquire(sender.name, count, sender.rate_per_s,
                                         worker=self.name)
        self.fleet[sender.name] = grant.workers
        if grant.granted and grant.wait_s > 0:
            if grant.wait_s > grant.throttled_s:  # the rate, not a 429's Retry-After
                PACED.note((("sender", sender.name),), count, amount=grant.wait_s,
                           rate_per_s=sender.rate_per_s)
            await asyncio.sleep(grant.wait_s)
        return grant

    def workers(self, sender: Sender) -> int:
        """How many workers share ``sender``'s rate now (1 until this worker asked once)."""
        return self.fleet.get(sender.name, 1)

    async def pause(self, sender: Sender, *, throttled_s: float = 0.0,
                    refused_s: float = 0.0) -> None:
        """ICS throttled the sender (``Retry-After``) or refused its credentials: every
        worker waits. Raises RateStoreError."""
        await self.store.pause(sender.name, throttled_s=throttled_s, refused_s=refused_s)
