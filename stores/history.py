"""What happened: the operator's views of campaigns and messages, read from the message store.

The counts are not kept by a consumer of the events (which could drift from what was
sent): the message store's own atomic transitions maintain them. Every transition that
moves a message from one state to another moves one unit from that state's counter to
the next one's in the campaign's counters, in the same script call
(:mod:`ics_sms.stores.messages`). A campaign's counters therefore always add up to the
messages the workers have reached, and can never show more finals than messages.

What each view holds:

* :class:`CampaignCounts`: per state (``pending`` … ``expired``), failure codes,
  segments handed to ICS (what ICS bills), clicks (total and unique messages), the
  submission rate now (an exponentially decaying average over ~10 s) and, when the
  publisher announced it, how many messages were published.
* :class:`MessageView`: the record and its timeline (each state with its time, attempt,
  ICS's message id or error, clicks).

Both are read in one round trip. The records, the timeline, the phone number index and
the campaign counters live for the retention period (``ICS_SMS_RETENTION_S``, 30 days by
default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ics_sms.schemas.ics import FAILURE_CODES

__all__ = [
    "COUNTED_STATES",
    "KNOWN_CODES",
    "RATE_TAU_S",
    "CampaignCounts",
    "MessageView",
    "TimelineEntry",
    "decayed_rate",
    "duration_text",
    "failure_meaning",
]

COUNTED_STATES = ("pending", "sending", "uncertain", "submitted",
                  "delivered", "failed", "rejected", "expired")
"""The states a campaign counts, in the order a message moves through them."""

_FINALS = ("delivered", "failed", "rejected", "expired")

RATE_TAU_S = 10.0
"""Time constant of the submission rate's decaying average."""

_OUR_CODES = {
    "no_receipt": "no receipt from ICS before the receipt deadline",
    "sender_unauthorized": "ICS refused the sender's credentials for too long",
    "sender_disabled": "the sender is disabled",
    "unknown_sender": "no such sender (or no default sender)",
    "retries_exhausted": "every attempt failed before ICS took the message",
    "duplicate": "another message was published with this message_id",
    "dlt": "the DLT rules refuse the message",
    "ics_refused": "ICS refused the message",
    "invalid": "the send request is invalid",
    "expired": "the message's validity passed before it was sent",
}


KNOWN_CODES = frozenset(FAILURE_CODES) | frozenset(_OUR_CODES)
"""Every error code with a known meaning."""


def failure_meaning(code: str) -> str:
    """What a failure ``error_code`` means: ICS's table (ICS_API.md) or ours."""
    return FAILURE_CODES.get(code) or _OUR_CODES.get(code) or "unknown code"


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    """One campaign as the message store counts it (see the module docstring)."""

    campaign_id: str
    states: Mapping[str, int] = field(default_factory=dict)
    """Messages in each state now (the keys of :data:`COUNTED_STATES`; absent: 0)."""
    reached: int = 0
    """Messages that have a record (a worker took them at least once)."""
    published: int = 0
    """Messages the publisher announced (``ics-sms publish``); 0 when not announced."""
    failure_codes: Mapping[str, int] = field(default_factory=dict)
    """``error_code`` of the finals that have one, with their counts."""
    segments: int = 0
    """Segments handed to ICS (what ICS bills), counted when the request is made."""
    clicks: int = 0
    unique_clicks: int = 0
    """Messages with at least one click."""
    first_at: float | None = None
    last_at: float | None = None
    """Epoch seconds of the first and the latest transition."""
    rate_per_s: float = 0.0
    """Messages handed to ICS per second now (decaying average, as of :attr:`as_of`)."""
    as_of: float = 0.0

    def count(self, state: str) -> int:
        return int(self.states.get(state, 0))

    @property
    def finals(self) -> int:
        return sum(self.count(s) for s in _FINALS)

    @property
    def total(self) -> int:
        """The campaign's size as far as it is known."""
        return max(self.published, self.reached)

    @property
    def waiting(self) -> int:
        """Published but not yet handed to ICS: in the queues (promotional window, rate,
        backlog) or released to be sent again."""
        return max(self.published - self.reached, 0) + self.count("pending") \
            + self.count("sending")

    @property
    def progress(self) -> float:
        """Share of the campaign that reached a final state (0..1)."""
        return self.finals / self.total if self.total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until everything not yet sent is handed to ICS at the current rate;
        None when nothing is being sent."""
        left = self.waiting
        if left == 0:
            return 0.0
        if self.rate_per_s <= 0.01:
            return None
        return left / self.rate_per_s


def duration_text(seconds: float | None, unknown: str = "-") -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min`` (an ETA or an age); ``unknown`` for None."""
    if seconds is None:
        return unknown
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def decayed_rate(value: float, since: float, now: float) -> float:
    """The decaying average ``value`` (per second, as of ``since``) seen at ``now``."""
    if value <= 0 or now <= since:
        return max(value, 0.0)
    return value * math.exp(-(now - since) / RATE_TAU_S)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One transition of a message."""

    at: float
    state: str
    attempt: int = 1
    note: str = ""
    """ICS's message id, an error code, a clicked URL or who made the change."""


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as the operator asks for it (phone number unmasked)."""

    message_id: str
    state: str
    campaign_id: str | None = None
    sender: str | None = None
    to: str | None = None
    attempt: int = 1
    provider_message_id: str | None = None
    segments: int | None = None
    final: Mapping[str, str] = field(default_factory=dict)
    """The final event's ``status``, ``error_code``, ``error`` (when final)."""
    clicks: int = 0
    created_at: float | None = None
    timeline: tuple[TimelineEntry, ...] = ()
