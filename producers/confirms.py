"""Publisher-confirm bookkeeping for one confirm-mode channel: pure logic, no I/O.

The broker numbers the publishes of a confirm-mode channel 1, 2, 3... (delivery tags) and
answers with ``basic.ack``/``basic.nack``, one tag or every tag up to one (``multiple``),
not necessarily in order. An unroutable mandatory message comes back as ``basic.return``
*before* its ack. :class:`ConfirmWindow` turns that into the one number a caller can trust:
how many messages, counted from the first still in the window, are confirmed (a *prefix*).
A message after a refused one is never counted, even when its own ack arrived.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["ConfirmWindow", "Failure", "Identified"]


class Identified(Protocol):
    @property
    def message_id(self) -> str | None: ...


T = TypeVar("T", bound=Identified)


@dataclass(frozen=True, slots=True)
class Failure:
    """The earliest message the broker refused, and why."""

    tag: int
    reason: str


class ConfirmWindow(Generic[T]):
    """Messages written to a channel and not yet confirmed, in publish order.

    ``inflight[i]`` has delivery tag ``low + i``. Acks advance ``low`` over the confirmed
    prefix; a nacked or returned tag stops it for good (until :meth:`reset`).
    """

    __slots__ = ("_acked", "_confirmed", "_failed", "_inflight", "_low")

    def __init__(self) -> None:
        self._inflight: deque[T] = deque()
        self._low = 1
        self._acked: set[int] = set()
        self._failed: dict[int, str] = {}
        self._confirmed = 0

    def __repr__(self) -> str:
        return (f"<ConfirmWindow inflight={len(self._inflight)} next_tag={self.next_tag} "
                f"failed={len(self._failed)}>")

    def __len__(self) -> int:
        return len(self._inflight)

    @property
    def next_tag(self) -> int:
        """The delivery tag the broker gives the next publish on this channel."""
        return self._low + len(self._inflight)

    @property
    def failure(self) -> Failure | None:
        if not self._failed:
            return None
        tag = min(self._failed)
        return Failure(tag, self._failed[tag])

    @property
    def settled(self) -> bool:
        """Nothing is awaited any more: all confirmed, or everything before a failure is."""
        failure = self.failure
        return not self._inflight if failure is None else self._low >= failure.tag

    def sent(self, items: Iterable[T]) -> None:
        """``items`` were written to the channel, in this order."""
        self._inflight.extend(items)

    def take_confirmed(self) -> int:
        """How many messages became confirmed since the last call."""
        count, self._confirmed = self._confirmed, 0
        return count

    def reset(self) -> list[T]:
        """Forget the channel (it is gone) and give back every unconfirmed message, in order."""
        pending = list(self._inflight)
        self._inflight.clear()
        self._low = 1
        self._acked.clear()
        self._failed.clear()
        return pending

    # -- broker events -------------------------------------------------------------------
    def on_ack(self, tag: int, multiple: bool) -> None:
        if tag < self._low or tag >= self.next_tag:
            return  # stale or unknown: nothing of ours
        if multiple and not self._acked and not self._failed:
            self._advance_to(tag + 1)
            return
        first = self._low if multiple else tag
        self._acked.update(t for t in range(first, tag + 1) if t not in self._failed)
        while self._low in self._acked:
            self._acked.discard(self._low)
            self._advance_to(self._low + 1)

    def on_nack(self, tag: int, multiple: bool) -> None:
        first = self._low if multiple else tag
        for t in range(max(first, self._low), min(tag + 1, self.next_tag)):
            if t not in self._acked:
                self._failed.setdefault(t, "refused by the broker (nack)")

    def on_return(self, message_id: str | None, reason: str) -> None:
        """A message came back unroutable; it is the earliest unsettled one with that id."""
        for offset, item in enumerate(self._inflight):
            tag = self._low + offset
            if item.message_id == message_id and tag not in self._failed \
                    and tag not in self._acked:
                self._failed[tag] = reason
                return

    def _advance_to(self, tag: int) -> None:
        count = tag - self._low
        for _ in range(count):
            self._inflight.popleft()
        self._low = tag
        self._confirmed += count
