"""Receipts waiting for their time (a failed POST is queued again after a backoff)."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from ics_sms.sandbox.wire import ReceiptBody

__all__ = ["PendingReceipt", "ReceiptQueue"]


@dataclass(slots=True)
class PendingReceipt:
    """One receipt for one message, bound for ``url``; ``attempts`` counts POSTs so far."""

    url: str
    event: str
    data: ReceiptBody
    attempts: int = 0


class ReceiptQueue:
    """Receipts ordered by the (monotonic) time they are due."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PendingReceipt]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"<ReceiptQueue waiting={len(self._heap)} next_due={self.next_due()}>"

    def push(self, due: float, receipt: PendingReceipt) -> bool:
        """Queue ``receipt``; True when it is now the first one due."""
        heapq.heappush(self._heap, (due, next(self._order), receipt))
        return self._heap[0][2] is receipt

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[PendingReceipt]:
        """Every receipt due at ``now``, earliest first."""
        due: list[PendingReceipt] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due

    def clear(self) -> int:
        dropped = len(self._heap)
        self._heap.clear()
        return dropped

