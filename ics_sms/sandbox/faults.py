"""Faults the sandbox injects (latency, 5xx, throttling, outages), changeable at run time.

``POST /_control`` takes a :class:`ControlRequest`; :class:`Faults` holds the current
knobs, initialised from :class:`~ics_sms.sandbox.config.SandboxConfig`.

Besides faults that refuse a request (nothing accepted), the sandbox can *accept* a batch
and then spoil its answer (:class:`AnswerFault`, for the next N requests or for all), echo
smsgids lower-cased, or answer ``400`` to any whole request holding a poisoned record.
These are the ambiguous answers after which a client cannot know what ICS accepted.
"""

from __future__ import annotations

import math
import random
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from ics_sms.sandbox.config import SandboxConfig

__all__ = ["AnswerFault", "ControlRequest", "Faults", "ThrottleBucket", "retry_after_header"]

DEFAULT_LATE_ANSWER_MS = 5000.0


class AnswerFault(StrEnum):
    """What happens to the answer of a request whose records the sandbox has accepted
    (counted, receipts planned): the client cannot tell what ICS accepted."""

    NONE = "none"
    LATE = "late"
    """The answer comes after ``late_answer_ms`` (past the client's timeout)."""
    ERROR_500 = "500"
    """``500`` with a JSON error body."""
    RESET = "reset"
    """The connection is reset: no answer at all."""
    HTML = "html"
    """``200`` with an HTML page (a proxy's error page, say)."""
    HALF = "half"
    """``200`` with answers for the first half of the records only."""


class ControlRequest(BaseModel):
    """A change of the sandbox's behaviour; absent fields stay as they are.

    ``outage_s`` starts an outage of that many seconds now (0 ends one); a
    ``throttle_per_s`` of 0 turns throttling off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    outage_s: float | None = Field(default=None, ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    throttle_per_s: float | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)
    delivery_ratio: float | None = Field(default=None, ge=0, le=1)
    click_ratio: float | None = Field(default=None, ge=0, le=1)
    receipts_paused: bool | None = None
    answer_fault: AnswerFault | None = Field(
        default=None, description="Spoil the answer of accepted requests (see AnswerFault).")
    answer_fault_requests: int | None = Field(
        default=None, ge=0,
        description="How many requests get answer_fault (0 or absent: every one, until "
                    "changed); "
                    "setting answer_fault or this restarts the count.")
    late_answer_ms: float | None = Field(default=None, ge=0)
    lowercase_smsgids: bool | None = Field(
        default=None, description="Echo every smsgid lower-cased in the answer.")
    poison_templateid: str | None = Field(
        default=None, description="Answer 400 to any request with a record of this "
                                  "templateid (nothing of it accepted); empty: off.")
    accounts: dict[Annotated[str, StringConstraints(min_length=1)],
                   Annotated[SecretStr, Field(min_length=1)]] | None = Field(
        default=None, description="Set the token of these ICS users (user: token): a new "
                                  "account, or a token regenerated on the portal (the user's "
                                  "old token is refused from now on).")


class ThrottleBucket:
    """Admits ``rate_per_s`` records per second on average, bursts of one second.

    A request larger than the burst passes when the bucket is full (and leaves it in
    debt), so that a batch of 1,000 is never refused forever by a lower rate.
    """

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, now: float) -> None:
        self._rate = rate_per_s
        self._capacity = max(rate_per_s, 1.0)
        self._tokens = self._capacity
        self._updated = now

    def __repr__(self) -> str:
        return f"<ThrottleBucket rate_per_s={self._rate:g} tokens={self._tokens:.1f}>"

    def take(self, count: int, now: float) -> float:
        """0 when ``count`` records pass now, else the seconds to wait before retrying."""
        elapsed = max(now - self._updated, 0.0)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        needed = min(float(count), self._capacity)
        if self._tokens >= needed:
            self._tokens -= count
            return 0.0
        return (needed - self._tokens) / self._rate


class Faults:
    """The current fault knobs. ``now`` is the event loop's monotonic clock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.latency_s = config.latency_ms / 1000
        self.error_rate = config.error_rate
        self.delivery_ratio = config.delivery_ratio
        self.click_ratio = config.click_ratio
        self.receipts_paused = False
        self._throttle_per_s = config.throttle_per_s
        self._buckets: dict[str, ThrottleBucket] = {}
        self._planned_outage = (config.outage_at_s, config.outage_s)
        self._outage = (math.inf, math.inf)
        seed = None if config.seed is None else f"{config.seed}/faults"
        self._rng = random.Random(seed)
        self.answer_fault = AnswerFault.NONE
        self._answer_faults_left: int | None = None
        self.late_answer_s = DEFAULT_LATE_ANSWER_MS / 1000
        self.lowercase_smsgids = False
        self.poison_templateid: str | None = None

    def __repr__(self) -> str:
        return (f"<Faults latency_s={self.latency_s:g} error_rate={self.error_rate:g} "
                f"throttle_per_s={self._throttle_per_s} outage={self._outage} "
                f"answer_fault={self.answer_fault.value} left={self._answer_faults_left}>")

    def begin(self, now: float) -> None:
        """The sandbox starts serving at ``now``: plan the configured outage from there."""
        at_s, length_s = self._planned_outage
        if length_s > 0:
            self._outage = (now + at_s, now + at_s + length_s)

    def in_outage(self, now: float) -> bool:
        start, end = self._outage
        return start <= now < end

    def outage_left_s(self, now: float) -> float:
        return max(self._outage[1] - now, 0.0) if self.in_outage(now) else 0.0

    def inject_error(self) -> bool:
        """True when this request should fail with a 5xx (share ``error_rate``)."""
        return self.error_rate > 0 and self._rng.random() < self.error_rate

    def throttle_wait_s(self, user: str, records: int, now: float) -> float:
        """0 when ``user`` may send ``records`` now, else how long to wait."""
        if self._throttle_per_s is None:
            return 0.0
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = ThrottleBucket(self._throttle_per_s, now)
        return bucket.take(records, now)

    def take_answer_fault(self) -> AnswerFault:
        """The fault of the answer to the request just accepted; counts it down."""
        fault = self.answer_fault
        left = self._answer_faults_left
        if fault is AnswerFault.NONE or left is None:
            return fault
        left -= 1
        self._answer_faults_left = left
        if left <= 0:
            self.answer_fault, self._answer_faults_left = AnswerFault.NONE, None
        return fault

    def poisoned(self, templateids: list[str | None]) -> bool:
        """True when a record of these templateids is poisoned (the request gets 400)."""
        return self.poison_templateid is not None and self.poison_templateid in templateids

    def apply(self, change: ControlRequest, now: float) -> None:
        if change.answer_fault is not None or change.answer_fault_requests is not None:
            self._apply_answer_fault(change)
        if change.late_answer_ms is not None:
            self.late_answer_s = change.late_answer_ms / 1000
        if change.lowercase_smsgids is not None:
            self.lowercase_smsgids = change.lowercase_smsgids
        if change.poison_templateid is not None:
            self.poison_templateid = change.poison_templateid or None
        if change.outage_s is not None:
            self._outage = (now, now + change.outage_s)
        if change.throttle_per_s is not None:
            self._throttle_per_s = change.throttle_per_s or None
            self._buckets.clear()
        if change.latency_ms is not None:
            self.latency_s = change.latency_ms / 1000
        for name in ("error_rate", "delivery_ratio", "click_ratio", "receipts_paused"):
            value = getattr(change, name)
            if value is not None:
                setattr(self, name, value)

    def _apply_answer_fault(self, change: ControlRequest) -> None:
        if change.answer_fault is not None:
            self.answer_fault = change.answer_fault
        requests = change.answer_fault_requests
        self._answer_faults_left = requests or None
        if self.answer_fault is AnswerFault.NONE:
            self._answer_faults_left = None

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "latency_ms": self.latency_s * 1000,
            "error_rate": self.error_rate,
            "throttle_per_s": self._throttle_per_s,
            "outage_left_s": round(self.outage_left_s(now), 3),
            "delivery_ratio": self.delivery_ratio,
            "click_ratio": self.click_ratio,
            "receipts_paused": self.receipts_paused,
            "answer_fault": self.answer_fault.value,
            "answer_fault_requests_left": self._answer_faults_left,
            "late_answer_ms": self.late_answer_s * 1000,
            "lowercase_smsgids": self.lowercase_smsgids,
            "poison_templateid": self.poison_templateid,
        }


def retry_after_header(wait_s: float) -> str:
    """HTTP ``Retry-After`` (whole seconds, at least 1) for a wait of ``wait_s``."""
    return str(max(1, math.ceil(wait_s)))
