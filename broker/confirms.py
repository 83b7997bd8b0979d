"""Publisher-confirm bookkeeping for one confirm-mode channel: pure logic, no I/O.

The broker numbers the publishes of a confirm-mode channel 1, 2, 3... (delivery tags) and
answers with ``basic.ack``/``basic.nack``, for one tag or for every tag up to one
(``multiple``), not necessarily in order. An unroutable mandatory message comes back as
``basic.return`` *before* its ack. :class:`ConfirmTracker` turns those into what its two
users need:

- the producer (``ics_sms.producers``) keeps a sliding window of messages in flight and
  needs the *prefix* confirmed: :meth:`~ConfirmTracker.take_confirmed` counts messages up
  to, never past, the earliest refused one, and :attr:`~ConfirmTracker.failure` names it;
- :class:`~ics_sms.broker.amqp.AmqpBroker` resolves each ``publish`` call (a range of tags)
  once every tag of it is settled (:meth:`~ConfirmTracker.is_settled`) and asks why it
  failed, if it did (:meth:`~ConfirmTracker.release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["NACKED", "ConfirmTracker", "Failure", "Publishable"]

NACKED = "refused by the broker (nack)"


class Publishable(Protocol):
    """What the tracker needs of a message to match a ``basic.return`` to it."""

    @property
    def message_id(self) -> str | None: ...

    @property
    def routing_key(self) -> str: ...


T = TypeVar("T", bound=Publishable)


@dataclass(frozen=True, slots=True)
class Failure:
    """A message the broker refused or returned, and why."""

    tag: int
    reason: str


class ConfirmTracker(Generic[T]):
    """Messages written to one channel and not yet settled, in publish order.

    ``inflight[i]`` has delivery tag ``low + i``; every tag below ``low`` is settled (acked
    or nacked). Tags settled out of order wait in ``settled`` until the gap closes. A
    refused (nack) or returned tag is recorded in ``failed`` until :meth:`release` or
    :meth:`reset`.
    """

    __slots__ = ("_confirmed", "_failed", "_first_failed", "_inflight", "_low", "_orphans",
                 "_settled")

    def __init__(self) -> None:
        self._inflight: deque[T] = deque()
        self._low = 1
        self._settled: set[int] = set()
        self._failed: dict[int, str] = {}
        self._first_failed: int | None = None
        self._orphans: deque[str] = deque()
        self._confirmed = 0

    def __repr__(self) -> str:
        return (f"<ConfirmTracker inflight={len(self._inflight)} next_tag={self.next_tag} "
                f"failed={len(self._failed)}>")

    def __len__(self) -> int:
        """Messages written and not yet settled (counting any settled out of order)."""
        return len(self._inflight)

    @property
    def next_tag(self) -> int:
        """The delivery tag the broker gives the next publish on this channel."""
        return self._low + len(self._inflight)

    @property
    def failure(self) -> Failure | None:
        """The earliest refused or returned message not yet released."""
        if self._first_failed is None:
            return None
        return Failure(self._first_failed, self._failed[self._first_failed])

    @property
    def settled(self) -> bool:
        """Nothing is awaited any more: all settled, or everything before the failure is."""
        first = self._first_failed
        return not self._inflight if first is None else self._low >= first

    def sent(self, items: Iterable[T]) -> range:
        """``items`` were written to the channel, in this order; returns their tags."""
        first = self.next_tag
        self._inflight.extend(items)
        return range(first, self.next_tag)

    def take_confirmed(self) -> int:
        """How many messages became confirmed (before any failure) since the last call."""
        count, self._confirmed = self._confirmed, 0
        return count

    def is_settled(self, tags: range) -> bool:
        """Whether the broker answered for every tag of ``tags``."""
        start = max(tags.start, self._low)
        if start >= tags.stop:
            return True
        if len(self._settled) < tags.stop - start:
            return False
        return all(tag in self._settled for tag in range(start, tags.stop))

    def release(self, tags: range) -> str | None:
        """Forget the failures of ``tags`` (settled); returns the earliest one's reason."""
        found = sorted(tag for tag in self._failed if tag in tags)
        if not found:
            return None
        reason = self._failed[found[0]]
        for tag in found:
            del self._failed[tag]
        self._first_failed = min(self._failed, default=None)
        return reason

    def reset(self) -> list[T]:
        """Forget the channel (it is gone) and give back every unsettled message, in order."""
        pending = list(self._inflight)
        self._inflight.clear()
        self._low = 1
        self._settled.clear()
        self._failed.clear()
        self._first_failed = None
        self._orphans.clear()
        return pending

    # -- broker events -------------------------------------------------------------------
    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, None)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, NACKED)

    def on_return(self, message_id: str | None, routing_key: str, reason: str) -> None:
        """A message came back unroutable: the earliest unsettled one with that id and key.

        Without a match (no message id) the reason fails whatever the next confirm
        settles: the broker confirms a returned message right after returning it.
        """
        if message_id is not None:
            for offset, item in enumerate(self._inflight):
                tag = self._low + offset
                if (item.message_id == message_id and item.routing_key == routing_key
                        and tag not in self._failed and tag not in self._settled):
                    self._fail(tag, reason)
                    return
        self._orphans.append(reason)

    def _settle(self, tag: int, multiple: bool, reason: str | None) -> None:
        last = self.next_tag - 1
        if multiple and tag == 0:
            tag = last  # AMQP: tag 0 with ``multiple`` means every message so far
        if tag < self._low or tag > last:
            return  # stale or unknown: nothing of ours
        if self._orphans:
            reason = self._orphans.popleft()
        if multiple and reason is None and not self._settled:
            self._pass(tag + 1)  # the common case: acks in order
            return
        for t in range(self._low if multiple else tag, tag + 1):
            if t not in self._settled:
                self._settled.add(t)
                if reason is not None:
                    self._fail(t, reason)
        end = self._low
        while end in self._settled:
            self._settled.discard(end)
            end += 1
        self._pass(end)

    def _fail(self, tag: int, reason: str) -> None:
        self._failed.setdefault(tag, reason)
        if self._first_failed is None or tag < self._first_failed:
            self._first_failed = tag

    def _pass(self, end: int) -> None:
        """Tags ``low..end-1`` are settled: they leave the window."""
        first_failed = self._first_failed
        confirmed_end = end if first_failed is None else min(end, first_failed)
        self._confirmed += max(0, confirmed_end - self._low)
        for _ in range(end - self._low):
            self._inflight.popleft()
        self._low = end
