"""Counters behind ``GET /_stats``: what the sandbox received, answered and posted back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PER_SECOND_KEPT", "SandboxStats"]

PER_SECOND_KEPT = 3600
"""How many seconds of ``accepted_per_second`` the stats keep (the latest ones)."""


@dataclass
class SandboxStats:
    """Running totals. ``accepted`` counts every acceptance per smsgid: an smsgid accepted
    more than once is a message sent more than once (an SMS paid for and received twice);
    ``duplicate_smsgids`` counts the acceptances beyond the first. ``per_second`` counts
    the records accepted in each second of ``clock`` (epoch seconds): the rate ICS saw."""

    requests: int = 0
    requests_in_flight: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    records_accepted: int = 0
    records_refused: int = 0
    duplicate_smsgids: int = 0
    receipts_scheduled: int = 0
    receipts_posted: Counter[str] = field(default_factory=Counter)
    receipt_posts: int = 0
    receipts_retried: int = 0
    receipts_failed: int = 0
    receipts_rejected: int = 0
    receipts_unroutable: int = 0
    answer_faults: Counter[str] = field(default_factory=Counter)
    requests_poisoned: int = 0
    accepted: Counter[str] = field(default_factory=Counter, repr=False)
    per_second: dict[int, int] = field(default_factory=dict, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __repr__(self) -> str:
        return (f"<SandboxStats requests={self.requests} accepted={self.records_accepted} "
                f"refused={self.records_refused} duplicates={self.duplicate_smsgids} "
                f"receipts_posted={self.receipts_posted.total()}>")

    def count_accepted(self, smsgid: str) -> None:
        self.records_accepted += 1
        if self.accepted[smsgid]:
            self.duplicate_smsgids += 1
        self.accepted[smsgid] += 1
        second = int(self.clock())
        per_second = self.per_second
        if second not in per_second:
            per_second[second] = 0
            if len(per_second) > PER_SECOND_KEPT:
                del per_second[min(per_second)]
        per_second[second] += 1

    def accepted_more_than_once(self) -> dict[str, int]:
        """``{smsgid: acceptances}`` of every smsgid accepted more than once."""
        return {smsgid: n for smsgid, n in self.accepted.items() if n > 1}

    def as_json(self, receipts_pending: int, *, by_smsgid: bool = False) -> dict[str, Any]:
        """The counters; with ``by_smsgid`` also ``accepted_by_smsgid`` (every smsgid)."""
        again = self.accepted_more_than_once()
        counters: dict[str, Any] = {
            "requests": self.requests,
            "requests_in_flight": self.requests_in_flight,
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "records_accepted": self.records_accepted,
            "records_refused": self.records_refused,
            "duplicate_smsgids": self.duplicate_smsgids,
            "smsgids_accepted": len(self.accepted),
            "smsgids_accepted_more_than_once": len(again),
            "most_acceptances_of_one_smsgid": max(self.accepted.values(), default=0),
            "receipts_scheduled": self.receipts_scheduled,
            "receipts_posted": self.receipts_posted.total(),
            "receipts_posted_by_event": dict(self.receipts_posted),
            "receipts_pending": receipts_pending,
            "receipt_posts": self.receipt_posts,
            "receipts_retried": self.receipts_retried,
            "receipts_failed": self.receipts_failed,
            "receipts_rejected": self.receipts_rejected,
            "receipts_unroutable": self.receipts_unroutable,
            "answer_faults": dict(self.answer_faults),
            "requests_poisoned": self.requests_poisoned,
            "accepted_per_second": {str(second): n
                                    for second, n in sorted(self.per_second.items())},
        }
        if by_smsgid:
            counters["accepted_by_smsgid"] = dict(self.accepted)
        return counters
