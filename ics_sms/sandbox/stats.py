"""Counters behind ``GET /_stats``: what the sandbox received, answered and posted back."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SandboxStats"]


@dataclass
class SandboxStats:
    """Running totals. ``duplicate_smsgids`` counts acceptances of an smsgid seen before,
    i.e. messages submitted more than once."""

    requests: int = 0
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
    _smsgids: set[str] = field(default_factory=set, repr=False)

    def __repr__(self) -> str:
        return (f"<SandboxStats requests={self.requests} accepted={self.records_accepted} "
                f"refused={self.records_refused} duplicates={self.duplicate_smsgids} "
                f"receipts_posted={self.receipts_posted.total()}>")

    def count_accepted(self, smsgid: str) -> None:
        self.records_accepted += 1
        if smsgid in self._smsgids:
            self.duplicate_smsgids += 1
        else:
            self._smsgids.add(smsgid)

    def as_json(self, receipts_pending: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "records_accepted": self.records_accepted,
            "records_refused": self.records_refused,
            "duplicate_smsgids": self.duplicate_smsgids,
            "receipts_scheduled": self.receipts_scheduled,
            "receipts_posted": self.receipts_posted.total(),
            "receipts_posted_by_event": dict(self.receipts_posted),
            "receipts_pending": receipts_pending,
            "receipt_posts": self.receipt_posts,
            "receipts_retried": self.receipts_retried,
            "receipts_failed": self.receipts_failed,
            "receipts_rejected": self.receipts_rejected,
            "receipts_unroutable": self.receipts_unroutable,
        }
