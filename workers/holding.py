"""How many messages a worker may hold unacknowledged, so that none outlives the broker's
consumer timeout.

RabbitMQ closes a channel whose oldest unacknowledged delivery is older than its
``consumer_timeout`` (30 minutes by default); every delivery of that channel then comes back
and the worker starts over. A worker holds a sender's messages until the sender's
``rate_per_s`` lets them out, so it must never hold more of them than that rate sends in a
safe share of the timeout (:data:`SAFE_SHARE`, leaving the rest for waiting on a batch slot,
the ICS request and the acks):

* per lane, the prefetch is capped by what the lane's senders together send in that time
  (:meth:`HoldBound.lane_prefetch`): a lane of slow senders is not handed a backlog it
  cannot work off;
* per sender, a delivery beyond :meth:`HoldBound.per_sender` is parked, not held: it goes
  back through a delay queue (no attempt spent) and comes back when the sender has caught
  up (:meth:`HoldBound.park_s`). A fast sender sharing the queue goes on meanwhile.

``rate_per_s`` is the most the whole fleet sends of a sender (:mod:`ics_sms.stores.rates`),
so with N workers sending for it (as the rate store counts them) each holds 1/N of that:
the fleet together never holds more of a sender than it sends in the safe share. (The
lane prefetch keeps the whole lane's bound: what one worker is handed beyond its share
of a sender is parked at once, not held.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ics_sms.schemas.senders import Lane, Sender
from ics_sms.schemas.topology import DELAY_TIERS_S

__all__ = ["SAFE_SHARE", "HoldBound"]

SAFE_SHARE = 0.5
"""Share of the consumer timeout a sender's held messages may take to send."""


@dataclass(frozen=True, slots=True)
class HoldBound:
    """The holding limits for one broker ``consumer_timeout_s``."""

    consumer_timeout_s: float

    @property
    def safe_s(self) -> float:
        """How long sending what a sender holds may take."""
        return self.consumer_timeout_s * SAFE_SHARE

    def per_sender(self, sender: Sender, workers: int = 1) -> int:
        """Most messages of ``sender`` one of ``workers`` workers sharing its rate holds at
        once (at least one: a slow sender still sends)."""
        return max(1, math.floor(sender.rate_per_s * self.safe_s / max(workers, 1)))

    def lane_prefetch(self, lane: Lane, senders: Iterable[Sender], configured: int) -> int:
        """``configured`` capped by what the lane's senders send within :attr:`safe_s`.

        Disabled senders send nothing and do not count. A lane without senders keeps
        ``configured``: its deliveries (unknown senders, wrongly laned messages) are
        settled at once, never held."""
        rate = sum(s.rate_per_s for s in senders if s.lane is lane and s.disabled is None)
        if rate <= 0:
            return configured
        return max(1, min(configured, math.floor(rate * self.safe_s)))

    def park_s(self, sender: Sender, held: int, workers: int = 1) -> float:
        """How long a parked delivery stays away: until what is held now is about sent (at
        this worker's share of the rate), at most the longest delay tier, at least the
        shortest."""
        drain_s = held * max(workers, 1) / sender.rate_per_s
        return float(min(max(drain_s, DELAY_TIERS_S[0]), DELAY_TIERS_S[-1]))
