"""One durable record per message, changed only by atomic conditional transitions.

This is what makes sending *effectively once*. A worker sends a message to ICS only after
it moved the message's record from ``pending`` (or no record) to ``sending``; everything
that happens afterwards is a transition that succeeds only from the states that allow it::

    (none)/pending --claim--> sending --call--> uncertain --submitted--> submitted --final--> ...
                                 |                  |  \\--final--> delivered|failed|...
                                 \\--release--------+--> pending   (ICS certainly did not get it)
    any non-final --final--> delivered | failed | rejected | expired   (first final wins)

A claim is a *lease*: it names the claiming batch (a token) and lasts ``lease_s``. Just
before its ICS request the batch moves its messages from ``sending`` to ``uncertain`` (ICS
may have them from now on), only where its token still holds; the answer then moves them
on. So a message found ``sending`` after its lease ran out was never handed to ICS (its
worker died or stalled before the call): it is claimed again and sent. A message found
``uncertain`` may be at ICS: it is never sent again, it waits for its receipt. A stalled
worker that wakes up after its lease was taken finds its token gone and sends nothing.

The record keeps what a final event needs (the :class:`MessageContext`, the smsgid, ICS's
message id, the attempt) and a *fingerprint* of the send request, so that a redelivery
(same fingerprint) is told apart from a different message reusing a ``message_id``
(a duplicate, refused while the record lives: at least ``dedupe_window_s``).

Messages in ``sending``/``submitted``/``uncertain`` have a deadline in a sorted set; the
sweeper (:meth:`MessageStore.sweep`) ends those whose deadline passed as ``expired``
(``no_receipt``) and keeps offering them until their event is confirmed (:meth:`swept`).

Two implementations with the same semantics: :class:`RedisMessageStore` (every batch call
is one Lua script call: one round trip, atomic) and :class:`InMemoryMessageStore` (one
process: ``memory://`` and unit tests).
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from prometheus_client import Counter

from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import MEMORY_URL, MessageContext, decode_many
from ics_sms.stores.history import (
    COUNTED_STATES,
    RATE_TAU_S,
    CampaignCounts,
    MessageView,
    TimelineEntry,
    decayed_rate,
)
from ics_sms.stores.history import (
    KNOWN_CODES as _KNOWN_CODES,
)
from ics_sms.stores.redis import RedisStore, StoreError

__all__ = [
    "FINALS",
    "FINAL_STATES",
    "REPLAYABLE_CODES",
    "Applied",
    "Claim",
    "ClaimResult",
    "Expired",
    "InMemoryMessageStore",
    "MessageRecord",
    "MessageStore",
    "MessageStoreError",
    "RedisMessageStore",
    "Reopen",
    "ReopenResult",
    "State",
    "Transition",
    "TransitionResult",
    "count_finals",
    "fingerprint",
    "open_message_store",
]


class MessageStoreError(StoreError):
    """The message store could not be reached or refused the operation."""


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SUBMITTED = "submitted"
    UNCERTAIN = "uncertain"
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.DELIVERED, State.FAILED, State.REJECTED, State.EXPIRED})

FINALS = Counter("ics_sms_message_finals", "Messages that reached their final state (the "
                 "first final wins), by state and error code; the sum over campaigns of "
                 "`ics-sms campaigns`.", ["state", "code"])


def count_finals(states: Sequence[tuple[State, str]]) -> None:
    """Count finals in :data:`FINALS` (codes outside the known tables count as ``other``:
    the label stays bounded whatever ICS sends)."""
    for state, code in states:
        FINALS.labels(state.value, code if code in _KNOWN_CODES or not code else "other").inc()

_WAITING = frozenset({State.SENDING, State.SUBMITTED, State.UNCERTAIN})
"""States with a receipt deadline: the sweeper ends them."""


def fingerprint(request: SendRequest, publish_id: str | None = None) -> str:
    """A hash of what the send request asks for (its canonical content, not its bytes)
    and of the publish that carried it (its ``x-ics-publish-id``, which redeliveries,
    retries and lane moves keep): publishing the same request again is a duplicate, not
    a redelivery. Publishers that set no publish id get the content alone."""
    publish = publish_id or ""
    parts = [request.message_id, request.campaign_id, request.to, request.text,
             request.sender or "", request.dlt_template_id or "",
             request.expires_at.isoformat() if request.expires_at else ""]
    if publish:
        parts.append(publish)
    metadata = orjson.dumps(request.metadata, option=orjson.OPT_SORT_KEYS).decode()
    return hashlib.blake2b("\x1f".join([*parts, metadata]).encode(),
                           digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's request to send ``message_id`` now (attempt ``attempt`` of a batch)."""

    message_id: str
    fingerprint: str
    attempt: int
    context: MessageContext
    smsgid: str = ""
    to: str = ""
    """The recipient (E.164): indexed for ``ics-sms messages find --to``."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What the store knows about a message (as seen by the call that returned it)."""

    state: State
    attempt: int = 1
    provider_message_id: str | None = None
    context: MessageContext | None = None
    final: dict[str, str] = field(default_factory=dict)
    """The final event the worker decided (status, error_code, error, event_id), if any."""
    lease_until: float = 0.0
    """For ``sending``: when the claim's lease ends (store clock, epoch seconds)."""


class ClaimResult(StrEnum):
    CLAIMED = "claimed"  # send it
    DUPLICATE = "duplicate"  # another message with this id: refuse, never send
    WAIT = "wait"  # claimed by another batch whose lease runs: look again after it
    BUSY = "busy"  # uncertain (or an old claim): ICS may have it, wait for its receipt
    DONE = "done"  # submitted or final: a redelivery, re-emit from the record


@dataclass(frozen=True, slots=True)
class Transition:
    """Move ``message_id`` to ``to`` (only from the states that allow it).

    For a final state ``event_id`` names the final event (a replay of the same event is
    recognised as the winner again) and ``final`` holds what a re-emission needs.
    """

    message_id: str
    to: State
    provider_message_id: str | None = None
    event_id: str = ""
    final: dict[str, str] | None = None
    token: str = ""
    """The claim token of the batch making it: applies only while that claim holds (and
    allows ``uncertain -> pending``: the batch's own request certainly failed)."""
    error_code: str = ""
    """For a final: its error code, counted per campaign and shown in the timeline
    (defaults to ``final["error_code"]``)."""
    sent: bool = False
    """ICS certainly had the message (a receipt): its segments count as sent if no
    ``submitted`` transition counted them."""

    @property
    def code(self) -> str:
        return self.error_code or (self.final or {}).get("error_code", "") or ""


class TransitionResult(StrEnum):
    APPLIED = "applied"  # the transition happened (for a final: this is THE final)
    REPLAY = "replay"  # the same final event again: still the final
    LOST = "lost"  # a final came first: this one is not the message's final
    SKIPPED = "skipped"  # not allowed from the current state (or no record)


@dataclass(frozen=True, slots=True)
class Applied:
    result: TransitionResult
    record: MessageRecord | None


@dataclass(frozen=True, slots=True)
class Expired:
    """A message the sweeper ended: publish its ``expired`` event, then :meth:`swept`."""

    message_id: str
    record: MessageRecord


def _count_applied(transitions: Sequence[Transition], applied: Sequence[Applied]) -> None:
    count_finals([(t.to, t.code) for t, a in zip(transitions, applied, strict=True)
                  if a.result is TransitionResult.APPLIED and t.to.final])


_RELEASED = "released: ICS did not take it"
"""The timeline's note on a message given back to be claimed again."""


class MessageStore(abc.ABC):
    """Per-message records; every method is one round trip for the whole batch."""

    def __init__(self, *, window_s: int, receipt_deadline_s: float,
                 retention_s: int = 30 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.receipt_deadline_s = receipt_deadline_s
        self.retention_s = retention_s
        self.clock = clock

    @property
    def ttl_s(self) -> int:
        """Records (with their timelines, the phone index and the campaign counts) live
        for the retention period, at least the dedupe window, always past the receipt
        deadline."""
        return int(max(self.window_s, self.receipt_deadline_s + 86400, self.retention_s))

    @abc.abstractmethod
    async def claim(self, claims: Sequence[Claim], *, token: str = "",
                    lease_s: float = 60.0) -> list[tuple[ClaimResult, MessageRecord | None]]:
        """Claim every message for sending, for ``lease_s``, as the batch ``token``; the
        record of those not claimed (None for those claimed). Raises MessageStoreError."""

    @abc.abstractmethod
    async def apply(self, transitions: Sequence[Transition], *,
                    records: bool = False) -> list[Applied]:
        """Apply the transitions in order; with ``records`` each result carries the
        record as the transition left it. Raises MessageStoreError."""

    @abc.abstractmethod
    async def read(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        """The records of ``message_ids`` (absent: no record), read only, in one round trip.
        The receiver checks receipts against them. Raises MessageStoreError."""

    @abc.abstractmethod
    async def sweep(self, limit: int = 500, retry_s: float = 60.0) -> list[Expired]:
        """End (as ``expired``) the waiting messages whose deadline passed, and offer again
        those whose expiry event was not confirmed within ``retry_s``."""

    @abc.abstractmethod
    async def swept(self, message_ids: Sequence[str]) -> None:
        """The expiry events of these messages are confirmed: stop offering them."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    # -- what happened (the operator's views; see :mod:`ics_sms.stores.history`) --

    @abc.abstractmethod
    async def announce(self, campaign_id: str, published: int, *, source: str = "") -> None:
        """The publisher confirmed ``published`` messages of ``campaign_id`` from ``source``
        (e.g. a campaign file's digest): the same source announced again (the file
        published again, its messages refused as duplicates) keeps the larger count, other
        sources add up."""

    @abc.abstractmethod
    async def clicked(self, clicks: Sequence[tuple[str, str, str]]) -> None:
        """Count clicks: ``(message_id, url, event_id)`` each. A click event counted before
        (ICS sends a receipt again) is not counted again; messages without a record are
        not counted."""

    @abc.abstractmethod
    async def campaigns(self, limit: int = 20) -> list[CampaignCounts]:
        """The campaigns with the most recent activity first."""

    @abc.abstractmethod
    async def campaign(self, campaign_id: str) -> CampaignCounts | None:
        """One campaign's counts; None when nothing is known of it."""

    @abc.abstractmethod
    async def message(self, message_id: str) -> MessageView | None:
        """One message with its timeline; None when it has no record."""

    @abc.abstractmethod
    async def find(self, to: str, *, since: float | None = None,
                   limit: int = 50) -> list[MessageView]:
        """The messages to ``to`` (E.164), newest first, claimed at or after ``since``."""

    async def __aenter__(self) -> MessageStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def reopen(self, reopens: Sequence[Reopen]) -> list[tuple[ReopenResult,
                                                                     MessageRecord | None]]:
        """Give dead-lettered messages that ICS certainly never got another life (an
        operator's replay, see :class:`Reopen`): for each, what happened and the record as
        it was found. One round trip, atomic per message. Raises MessageStoreError."""


# -- in memory ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    state: State
    fp: str
    attempt: int
    context: MessageContext | None
    smsgid: str = ""
    mid: str | None = None
    event_id: str = ""
    final: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0
    swept: bool = False
    token: str = ""
    lease: float = 0.0
    campaign: str = ""
    to: str = ""
    created: float = 0.0
    segments: int = 1
    code: str = ""
    clicks: int = 0
    timeline: list[TimelineEntry] = field(default_factory=list)
    taken: bool = False
    """Its segments were counted (ICS has it)."""

    def record(self) -> MessageRecord:
        return MessageRecord(self.state, self.attempt, self.mid, self.context, dict(self.final),
                             self.lease)

    def view(self, message_id: str) -> MessageView:
        context = self.context
        return MessageView(message_id, self.state.value, self.campaign or None,
                           context.sender if context else None, self.to or None, self.attempt,
                           self.mid, context.segments if context else None, dict(self.final),
                           self.clicks, self.created or None, tuple(self.timeline))


@dataclass(slots=True)
class _Campaign:
    states: dict[str, int] = field(default_factory=dict)
    reached: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    clicks: int = 0
    unique: int = 0
    first: float = 0.0
    last: float = 0.0
    rate: float = 0.0
    rate_at: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)

    def counts(self, campaign_id: str, now: float) -> CampaignCounts:
        return CampaignCounts(campaign_id, {k: v for k, v in self.states.items() if v},
                              self.reached, sum(self.sources.values()),
                              {k: v for k, v in self.codes.items() if v}, self.segments,
                              self.clicks, self.unique, self.first or None, self.last or None,
                              decayed_rate(self.rate, self.rate_at, now), now)


class InMemoryMessageStore(MessageStore):
    """The same transitions on dicts of one process."""

    def __init__(self, *, window_s: int = 7 * 86400, receipt_deadline_s: float = 72 * 3600,
                 retention_s: int = 30 * 86400, clock: Callable[[], float] = time.time) -> None:
        super().__init__(window_s=window_s, receipt_deadline_s=receipt_deadline_s,
                         retention_s=retention_s, clock=clock)
        self._entries: dict[str, _Entry] = {}
        self._deadlines: dict[str, float] = {}
        self._campaigns: dict[str, _Campaign] = {}
        self._phones: dict[str, dict[str, float]] = {}

    def _count(self, entry: _Entry, now: float, old: State | None, new: State | None,
               *, note: str = "", code: str = "", sent: bool = False) -> None:
        """The campaign counters and the timeline of one transition (as the scripts do)."""
        if new is not None:
            entry.timeline.append(TimelineEntry(now, new.value, entry.attempt, note))
        if not entry.campaign:
            return
        camp = self._campaigns.setdefault(entry.campaign, _Campaign(first=now))
        camp.last = now
        if old is None and new is not None:
            camp.reached += 1
        if old is not None:
            camp.states[old.value] = camp.states.get(old.value, 0) - 1
        if new is not None:
            camp.states[new.value] = camp.states.get(new.value, 0) + 1
        if code and new is not None and new.final:
            camp.codes[code] = camp.codes.get(code, 0) + 1
            entry.code = code
        if sent:
            self._taken(entry, now)

    def _taken(self, entry: _Entry, now: float) -> None:
        """ICS has the message: its segments count (once), and the campaign's rate."""
        camp = self._campaigns.get(entry.campaign)
        if entry.taken or camp is None:
            return
        entry.taken = True
        camp.segments += entry.segments
        camp.rate = decayed_rate(camp.rate, camp.rate_at, now) + 1 / RATE_TAU_S
        camp.rate_at = max(now, camp.rate_at)

    def __repr__(self) -> str:
        return f"<InMemoryMessageStore records={len(self._entries)} waiting={len(self._deadlines)}>"

    def _get(self, message_id: str, now: float) -> _Entry | None:
        entry = self._entries.get(message_id)
        if entry is not None and entry.expires <= now:
            del self._entries[message_id]
            return None
        return entry

    async def claim(self, claims: Sequence[Claim], *, token: str = "",
                    lease_s: float = 60.0) -> list[tuple[ClaimResult, MessageRecord | None]]:
        now = self.clock()
        out: list[tuple[ClaimResult, MessageRecord | None]] = []
        for claim in claims:
            entry = self._get(claim.message_id, now)
            if entry is not None and entry.state.final and entry.created \
                    and entry.created < now - self.window_s:
                del self._entries[claim.message_id]  # past the dedupe window: a new message
                entry = None
            if entry is None:
                entry = self._entries[claim.message_id] = _Entry(
                    State.SENDING, claim.fingerprint, claim.attempt, claim.context,
                    claim.smsgid, expires=now + self.ttl_s, token=token, lease=now + lease_s,
                    campaign=claim.context.campaign_id, to=claim.to, created=now,
                    segments=claim.context.segments or 1)
                self._deadlines[claim.message_id] = now + self.receipt_deadline_s
                self._count(entry, now, None, State.SENDING)
                if claim.to:
                    self._phones.setdefault(claim.to, {})[claim.message_id] = now
                out.append((ClaimResult.CLAIMED, None))
            elif entry.fp and entry.fp != claim.fingerprint:
                out.append((ClaimResult.DUPLICATE, entry.record()))
            elif entry.state is State.PENDING or (
                    entry.state is State.SENDING and 0 < entry.lease < now):
                old, entry.state, entry.attempt = entry.state, State.SENDING, claim.attempt
                self._count(entry, now, old, State.SENDING,
                            note="" if old is State.PENDING else "lease ran out")
                entry.token, entry.lease = token, now + lease_s
                self._deadlines[claim.message_id] = now + self.receipt_deadline_s
                out.append((ClaimResult.CLAIMED, None))
            elif entry.state is State.SENDING and entry.lease:
                out.append((ClaimResult.WAIT, entry.record()))
            elif entry.state in (State.SENDING, State.UNCERTAIN):
                out.append((ClaimResult.BUSY, entry.record()))
            else:
                out.append((ClaimResult.DONE, entry.record()))
        return out

    async def apply(self, transitions: Sequence[Transition], *,
                    records: bool = False) -> list[Applied]:
        now = self.clock()
        applied = [self._apply(t, now) for t in transitions]
        _count_applied(transitions, applied)
        return applied if records else [Applied(a.result, None) for a in applied]

    def _apply(self, t: Transition, now: float) -> Applied:
        entry = self._get(t.message_id, now)
        if t.to.final:
            if entry is None:
                entry = self._entries[t.message_id] = _Entry(
                    t.to, "", 1, None, mid=t.provider_message_id, event_id=t.event_id,
                    final=dict(t.final or {}), expires=now + self.ttl_s, created=now)
                self._count(entry, now, None, t.to, note=t.code)
                return Applied(TransitionResult.APPLIED, entry.record())
            if entry.state.final:
                same = bool(t.event_id) and t.event_id == entry.event_id
                if t.sent and not entry.mid:  # e.g. swept, then its receipt came
                    self._taken(entry, now)
                return Applied(TransitionResult.REPLAY if same else TransitionResult.LOST,
                               entry.record())
            old = entry.state
            entry.state, entry.event_id, entry.final = t.to, t.event_id, dict(t.final or {})
            entry.mid = t.provider_message_id or entry.mid
            self._deadlines.pop(t.message_id, None)
            self._count(entry, now, old, t.to, note=t.code, code=t.code,
                        sent=t.sent and old is not State.SUBMITTED)
            return Applied(TransitionResult.APPLIED, entry.record())
        if entry is None:
            return Applied(TransitionResult.SKIPPED, None)
        if entry.state.final and t.provider_message_id and t.to is State.SUBMITTED:
            if not entry.mid:  # the receipt (or the sweeper) came first
                self._taken(entry, now)
                entry.mid = t.provider_message_id
            return Applied(TransitionResult.SKIPPED, entry.record())
        allowed = {State.SUBMITTED: (State.SENDING, State.UNCERTAIN),
                   State.UNCERTAIN: (State.SENDING,),
                   State.PENDING: (State.SENDING, State.UNCERTAIN) if t.token else
                   (State.SENDING,)}.get(t.to, ())
        if entry.state not in allowed or (t.token and t.token != entry.token):
            return Applied(TransitionResult.SKIPPED, entry.record())
        old, entry.state = entry.state, t.to
        entry.mid = t.provider_message_id or entry.mid
        self._count(entry, now, old, t.to, note=(_RELEASED if t.to is State.PENDING
                                                  else t.provider_message_id or ""),
                    sent=t.to is State.SUBMITTED)
        if t.to is State.PENDING:
            self._deadlines.pop(t.message_id, None)
        else:
            self._deadlines[t.message_id] = now + self.receipt_deadline_s
        return Applied(TransitionResult.APPLIED, entry.record())

    async def read(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        now = self.clock()
        found = {}
        for message_id in message_ids:
            entry = self._get(message_id, now)
            if entry is not None:
                found[message_id] = entry.record()
        return found

    async def sweep(self, limit: int = 500, retry_s: float = 60.0) -> list[Expired]:
        now = self.clock()
        due = sorted((d, m) for m, d in self._deadlines.items() if d <= now)[:limit]
        out = []
        for _deadline, message_id in due:
            entry = self._get(message_id, now)
            if entry is not None and entry.state in _WAITING:
                old, entry.state, entry.swept = entry.state, State.EXPIRED, True
                entry.event_id = "no_receipt"
                self._count(entry, now, old, State.EXPIRED, note="no_receipt",
                            code="no_receipt")
            if entry is not None and entry.state is State.EXPIRED and entry.swept:
                self._deadlines[message_id] = now + retry_s
                out.append(Expired(message_id, entry.record()))
            else:
                del self._deadlines[message_id]
        return out

    async def swept(self, message_ids: Sequence[str]) -> None:
        for message_id in message_ids:
            self._deadlines.pop(message_id, None)
            entry = self._entries.get(message_id)
            if entry is not None:
                entry.swept = False

    async def close(self) -> None:
        """Nothing to release."""

    async def announce(self, campaign_id: str, published: int, *, source: str = "") -> None:
        now = self.clock()
        camp = self._campaigns.setdefault(campaign_id, _Campaign(first=now))
        camp.sources[source] = max(camp.sources.get(source, 0), published)
        camp.last = now

    async def clicked(self, clicks: Sequence[tuple[str, str, str]]) -> None:
        now = self.clock()
        seen: dict[str, set[str]] = self.__dict__.setdefault("_click_ids", {})
        for message_id, url, event_id in clicks:
            entry = self._get(message_id, now)
            if entry is None or event_id in seen.setdefault(message_id, set()):
                continue
            seen[message_id].add(event_id)
            entry.clicks += 1
            entry.timeline.append(TimelineEntry(now, "clicked", entry.attempt, _note(url)))
            camp = self._campaigns.get(entry.campaign)
            if camp is not None:
                camp.clicks += 1
                camp.unique += entry.clicks == 1
                camp.last = now

    async def campaigns(self, limit: int = 20) -> list[CampaignCounts]:
        now = self.clock()
        recent = sorted(self._campaigns.items(), key=lambda kv: kv[1].last, reverse=True)
        return [camp.counts(cid, now) for cid, camp in recent[:limit]]

    async def campaign(self, campaign_id: str) -> CampaignCounts | None:
        camp = self._campaigns.get(campaign_id)
        return camp.counts(campaign_id, self.clock()) if camp is not None else None

    async def message(self, message_id: str) -> MessageView | None:
        entry = self._get(message_id, self.clock())
        return entry.view(message_id) if entry is not None else None

    async def find(self, to: str, *, since: float | None = None,
                   limit: int = 50) -> list[MessageView]:
        now = self.clock()
        found = sorted(((at, mid) for mid, at in self._phones.get(to, {}).items()
                        if since is None or at >= since), reverse=True)
        views = []
        for _at, message_id in found:
            entry = self._get(message_id, now)
            if entry is not None:
                views.append(entry.view(message_id))
            if len(views) >= limit:
                break
        return views

    async def reopen(self, reopens: Sequence[Reopen]) -> list[tuple[ReopenResult,
                                                                     MessageRecord | None]]:
        now = self.clock()
        origins: dict[str, str] = self.__dict__.setdefault("_reopened_for", {})
        out: list[tuple[ReopenResult, MessageRecord | None]] = []
        for item in reopens:
            entry = self._get(item.message_id, now)
            if entry is None:
                origins.pop(item.message_id, None)
                out.append((ReopenResult.MISSING, None))
                continue
            record = entry.record()
            origin = origins.get(item.message_id)
            if entry.fp and item.origin not in (entry.fp, origin):
                out.append((ReopenResult.OTHER, record))
            elif entry.state.final:
                if not _never_sent(entry.state.value, entry.mid, entry.event_id, entry.final):
                    out.append((ReopenResult.SENT, record))
                    continue
                self._reopen_entry(item, entry, now, origins)
                out.append((ReopenResult.REOPENED, record))
            elif entry.state is State.PENDING and origin == item.origin:
                self._reopen_entry(item, entry, now, origins)
                out.append((ReopenResult.REOPENED, record))
            else:
                out.append((ReopenResult.ACTIVE, record))
        return out

    def _reopen_entry(self, item: Reopen, entry: _Entry, now: float,
                      origins: dict[str, str]) -> None:
        if entry.state.final:
            camp = self._campaigns.get(entry.campaign)
            if camp is not None and entry.code:
                camp.codes[entry.code] = camp.codes.get(entry.code, 0) - 1
            entry.code = ""
            entry.attempt = 1
            self._count(entry, now, entry.state, State.PENDING, note="replay")
        entry.state, entry.fp, entry.attempt = State.PENDING, item.fingerprint, 1
        entry.event_id, entry.final, entry.swept, entry.token, entry.lease = "", {}, False, "", 0.0
        entry.expires = now + self.ttl_s
        self._deadlines.pop(item.message_id, None)
        origins[item.message_id] = item.origin


# -- Redis ----------------------------------------------------------------------------------
#
# A record is a hash: s (state), fp, a (attempt), ctx (MessageContext JSON), g (smsgid),
# mid, fe (final event id), fj (final fields, JSON), x (expired by the sweeper, event not
# yet confirmed), ct (claim token), le (claim lease end). KEYS[1] is the sorted set of
# deadlines (members: message ids), KEYS[2..] the records; ARGV[1..4] = ttl, now, deadline
# score, prefix length (claim: ARGV[5..7] = token, lease end, dedupe window; apply:
# ARGV[5] = '1' to return the records). Records live for the retention period; a final
# record older than the dedupe window (``t0``) no longer holds its message_id: a claim
# replaces it with a new message's. A successful claim returns only its code: the hot path parses
# nothing it does not need. A record without ``le`` in ``sending`` was claimed by a worker
# that had no leases: it is treated as busy (ICS may have it).

_RECORD_FIELDS = "'s', 'a', 'mid', 'ctx', 'fj'"

# What happened (stores/history.py): every script that changes a record's state also moves
# one unit between the state counters of the record's campaign (hash ``{prefix}~c:{id}``,
# field ``c`` of the record names the campaign), appends the change to the record's
# timeline (field ``h``: ``time|state|attempt|note`` lines) and touches the campaign in
# the index ``{prefix}~campaigns`` (score: latest activity). A claim of a new message also
# indexes its phone number: one sorted set per UTC day (``{prefix}~to:{day}``, expiring
# after the retention), members ``phone|epoch ms|message_id`` read by lexical range.
# Counter changes are summed per campaign during the script and written once at its end
# (``flush``), so a batch of one campaign costs a few commands, not a few per message.
# ``_sub`` (messages ICS took in this call) feeds the decaying submission rate (``rv`` as
# of ``rt``).
_FINAL_LUA = ", ".join(f"{state.value} = true" for state in sorted(FINAL_STATES))

_COUNT_LUA = f"""
local final = {{{_FINAL_LUA}}}
local cdelta = {{}}
local function bump(c, f, n)
  if not c or c == '' then return end
  local d = cdelta[c]
  if not d then d = {{}}; cdelta[c] = d end
  d[f] = (d[f] or 0) + n
end
local function moved(c, from, to)
  if from then bump(c, from, -1) end
  if to then bump(c, to, 1) end
end
local stamp = string.format('%.3f', tonumber(ARGV[2]) or 0)
local function note(h, state, attempt, text)
  local e = stamp .. '|' .. state .. '|' .. (attempt or '1') .. '|' .. (text or '')
  if not h or h == '' then return e end
  h = h .. '\\n' .. e
  if #h > 4000 then
    local cut = string.find(h, '\\n', #h - 4000, true)
    if cut then h = string.sub(h, cut + 1) end
  end
  return h
end
local function flush(base, ttl, now)
  for c, d in pairs(cdelta) do
    local key = base .. '~c:' .. c
    local sub = d['_sub']
    d['_sub'] = nil
    if sub and sub > 0 then
      local v = redis.call('HMGET', key, 'rv', 'rt')
      local rv, rt = tonumber(v[1] or '0') or 0, tonumber(v[2] or '0') or 0
      if now > rt then rv = rv * math.exp(-(now - rt) / {RATE_TAU_S}); rt = now end
      redis.call('HSET', key, 'rv', tostring(rv + sub / {RATE_TAU_S}), 'rt', tostring(rt))
    end
    for f, n in pairs(d) do
      if n ~= 0 then redis.call('HINCRBY', key, f, n) end
    end
    redis.call('HSETNX', key, 't0', tostring(now))
    redis.call('HSET', key, 't1', tostring(now))
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', base .. '~campaigns', now, c)
  end
end
"""

_CLAIM_LUA = _COUNT_LUA + f"""
local out = {{}}
local plen = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
local base = string.sub(KEYS[2], 1, plen)
-- the phone index: one sorted set per UTC day, members phone|time|id (lexical order)
local phones = base .. '~to:' .. string.format('%d', math.floor(now / 86400))
local at = string.format('%013.0f', now * 1000)
local indexed = false
for i = 2, #KEYS do
  local key = KEYS[i]
  local id = string.sub(key, plen + 1)
  local b = 7 + (i - 2) * 7
  local fp = ARGV[b + 1]
  local r = redis.call('HMGET', key, 'fp', {_RECORD_FIELDS}, 'le', 'c', 'h', 't0')
  local le = tonumber(r[7] or '')
  local born = tonumber(r[10] or '')
  if born and born < now - tonumber(ARGV[7]) and final[r[2]] then
    -- ended and older than the dedupe window: the id is free for a new message (the old
    -- life's counts stay in its campaign)
    redis.call('DEL', key)
    r = {{false, false, false, false, false, false, false, false, false, false}}
  end
  local code
  if not r[2] then
    local camp, to = ARGV[b + 6], ARGV[b + 5]
    redis.call('HSET', key, 's', 'sending', 'fp', fp, 'a', ARGV[b + 2], 'ctx', ARGV[b + 3],
               'g', ARGV[b + 4], 'ct', ARGV[5], 'le', ARGV[6], 'c', camp, 'to', to,
               't0', ARGV[2], 'sg', ARGV[b + 7], 'h', note(nil, 'sending', ARGV[b + 2]))
    redis.call('EXPIRE', key, ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    if to ~= '' then
      redis.call('ZADD', phones, 0, to .. '|' .. at .. '|' .. id)
      indexed = true
    end
    bump(camp, 'n', 1)
    moved(camp, nil, 'sending')
    code = 'claimed'
  elseif r[1] and r[1] ~= fp then
    code = 'duplicate'
  elseif r[2] == 'pending' or (r[2] == 'sending' and le and le < now) then
    local why = ''
    if r[2] == 'sending' then why = 'lease ran out' else moved(r[8], 'pending', 'sending') end
    redis.call('HSET', key, 's', 'sending', 'a', ARGV[b + 2], 'ct', ARGV[5], 'le', ARGV[6],
               'h', note(r[9], 'sending', ARGV[b + 2], why))
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    code = 'claimed'
  elseif r[2] == 'sending' and le then
    code = 'wait'
  elseif r[2] == 'sending' or r[2] == 'uncertain' then
    code = 'busy'
  else
    code = 'done'
  end
  if code == 'claimed' then
    out[#out + 1] = code
  else
    out[#out + 1] = {{code, r[2], r[3] or '1', r[4] or '', r[5] or '', r[6] or '', r[7] or ''}}
  end
end
flush(base, ARGV[1], now)
if indexed then redis.call('EXPIRE', phones, tonumber(ARGV[1]) + 86400) end
return out
"""

_APPLY_LUA = _COUNT_LUA + f"""
local out = {{}}
local function taken(key, c, r)
  -- ICS has the message: its segments count (once: 'sgc'), and the campaign's rate
  if r[11] then return end
  redis.call('HSET', key, 'sgc', '1')
  r[11] = '1'
  bump(c, 'sg', tonumber(r[10] or '1') or 1)
  bump(c, '_sub', 1)
end
local plen = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
local base = string.sub(KEYS[2], 1, plen)
local from = {{submitted = {{sending = true, uncertain = true}},
               uncertain = {{sending = true}}, pending = {{sending = true}}}}
local fenced = {{submitted = {{sending = true, uncertain = true}},
                 uncertain = {{sending = true}}, pending = {{sending = true, uncertain = true}}}}
for i = 2, #KEYS do
  local key = KEYS[i]
  local id = string.sub(key, plen + 1)
  local b = 5 + (i - 2) * 7
  local to, mid, fe, fj, ct = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local ec, sent = ARGV[b + 6], ARGV[b + 7]
  local r = redis.call('HMGET', key, {_RECORD_FIELDS}, 'fe', 'ct', 'c', 'h', 'sg', 'sgc')
  local c = r[8]
  local allowed = from
  if ct ~= '' then allowed = fenced end
  local s = r[1]
  local code = 'skipped'
  if final[to] then
    if not s then
      redis.call('HSET', key, 's', to, 'fe', fe, 'a', '1', 't0', ARGV[2],
                 'h', note(nil, to, '1', ec))
      if fj ~= '' then redis.call('HSET', key, 'fj', fj) end
      if mid ~= '' then redis.call('HSET', key, 'mid', mid) end
      redis.call('EXPIRE', key, ARGV[1])
      r = {{to, '1', mid, false, fj, fe}}
      code = 'applied'
    elseif final[s] then
      if fe ~= '' and fe == r[6] then code = 'replay' else code = 'lost' end
      if sent == '1' and not r[3] then taken(key, c, r) end  -- e.g. swept, then its receipt came
    else
      local set = {{'s', to, 'fe', fe, 'h', note(r[9], to, r[2], ec)}}
      if fj ~= '' then set[#set + 1] = 'fj'; set[#set + 1] = fj end
      if ec ~= '' then set[#set + 1] = 'ec'; set[#set + 1] = ec end
      if mid ~= '' then set[#set + 1] = 'mid'; set[#set + 1] = mid; r[3] = mid end
      redis.call('HSET', key, unpack(set))
      moved(c, s, to)
      if ec ~= '' then bump(c, 'e:' .. ec, 1) end
      if sent == '1' and s ~= 'submitted' then taken(key, c, r) end
      redis.call('ZREM', KEYS[1], id)
      r[1] = to
      r[5] = fj
      code = 'applied'
    end
  elseif s then
    if final[s] and to == 'submitted' and mid ~= '' then
      if not r[3] then
        taken(key, c, r)
        redis.call('HSET', key, 'mid', mid)
        r[3] = mid
      end
    elseif allowed[to] and allowed[to][s] and (ct == '' or ct == r[7]) then
      local why = mid
      if to == 'pending' then why = {_RELEASED!r} end
      if mid ~= '' then
        redis.call('HSET', key, 's', to, 'h', note(r[9], to, r[2], why), 'mid', mid)
        r[3] = mid
      else
        redis.call('HSET', key, 's', to, 'h', note(r[9], to, r[2], why))
      end
      moved(c, s, to)
      if to == 'submitted' then taken(key, c, r) end
      if to == 'pending' then
        redis.call('ZREM', KEYS[1], id)
      else
        redis.call('ZADD', KEYS[1], ARGV[3], id)
      end
      r[1] = to
      code = 'applied'
    end
  end
  if ARGV[5] == '1' then
    out[#out + 1] = {{code, r[1] or '', r[2] or '1', r[3] or '', r[4] or '', r[5] or '', ''}}
  else
    out[#out + 1] = code
  end
end
flush(base, ARGV[1], now)
return out
"""

_READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 's', 'mid', 'ctx')
end
return out
"""
"""The receiver's read: state, ICS's message id and context of every key (no final JSON,
no attempt: a receipt check needs neither)."""

_SWEEP_LUA = _COUNT_LUA + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[5])
local out = {}
local waiting = {sending = true, submitted = true, uncertain = true}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local r = redis.call('HMGET', key, 's', 'a', 'mid', 'ctx', 'fj', 'x', 'c', 'h')
  if waiting[r[1]] then
    redis.call('HSET', key, 's', 'expired', 'x', '1', 'fe', 'no_receipt', 'ec', 'no_receipt',
               'h', note(r[8], 'expired', r[2], 'no_receipt'))
    moved(r[7], r[1], 'expired')
    bump(r[7], 'e:no_receipt', 1)
    r[1] = 'expired'
    r[6] = '1'
  end
  if r[1] == 'expired' and r[6] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = {id, r[1], r[2] or '1', r[3] or '', r[4] or '', r[5] or ''}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
flush(ARGV[4], ARGV[1], tonumber(ARGV[2]))
return out
"""

_SWEPT_LUA = """
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', ARGV[1] .. ARGV[i], 'x')
end
return #ARGV - 1
"""


def _note(text: str) -> str:
    """A timeline note: one line, no field separator, bounded."""
    return text.replace("|", "%7C").replace("\n", " ")[:300]


_CLAIMED = ClaimResult.CLAIMED
_STATES = {state.value: state for state in State}


def _state(value: str) -> State:
    return _STATES.get(value) or State(value)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(message_id: str, row: Sequence[object]) -> MessageRecord:
    """A record from ``[state, attempt, mid, ctx, fj, le]`` as the scripts return them."""
    state, attempt, mid, ctx, fj = (_text(v) for v in row[:5])
    lease = _text(row[5]) if len(row) > 5 else ""
    context = None
    if ctx:
        try:
            context = MessageContext.from_value(message_id, ctx)
        except ValueError:
            context = None
    final = orjson.loads(fj) if fj else {}
    try:
        lease_until = float(lease) if lease else 0.0
    except ValueError:
        lease_until = 0.0
    return MessageRecord(State(state) if state else State.PENDING,
                         int(attempt) if attempt.isdigit() else 1, mid or None, context,
                         final if isinstance(final, dict) else {}, lease_until)


class RedisMessageStore(RedisStore, MessageStore):
    """Records as Redis hashes, deadlines in one sorted set; each call one script call.
    (Single Redis: the keys of a batch are not in one hash slot of a Redis Cluster.)"""

    error = MessageStoreError

    def __init__(self, url: str, *, prefix: str = "ics-sms:msg:", window_s: int = 7 * 86400,
                 receipt_deadline_s: float = 72 * 3600, retention_s: int = 30 * 86400,
                 timeout_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        MessageStore.__init__(self, window_s=window_s, receipt_deadline_s=receipt_deadline_s,
                              retention_s=retention_s, clock=clock)
        RedisStore.__init__(self, url, prefix=prefix, ttl_s=self.ttl_s, timeout_s=timeout_s)
        self._deadlines = prefix + "~deadlines"
        self._claim = self._client.register_script(_CLAIM_LUA)
        self._apply = self._client.register_script(_APPLY_LUA)
        self._sweep = self._client.register_script(_SWEEP_LUA)
        self._read = self._client.register_script(_READ_LUA)
        self._swept = self._client.register_script(_SWEPT_LUA)
        self._click = self._client.register_script(_CLICK_LUA)
        self._campaign_index = prefix + "~campaigns"

    def _head(self, now: float | None = None) -> list[str | bytes | int | float]:
        now = self.clock() if now is None else now
        return [self.ttl_s, now, now + self.receipt_deadline_s, len(self._prefix)]

    async def claim(self, claims: Sequence[Claim], *, token: str = "",
                    lease_s: float = 60.0) -> list[tuple[ClaimResult, MessageRecord | None]]:
        if not claims:
            return []
        now = self.clock()
        args = [*self._head(now), token, now + lease_s, self.window_s]
        for c in claims:
            args += [c.fingerprint, c.attempt, c.context.to_value(), c.smsgid, c.to,
                     c.context.campaign_id, c.context.segments or 1]
        keys = [self._deadlines, *(self._prefix + c.message_id for c in claims)]
        with self.failing_as("claim messages"):
            rows = await self._claim(keys=keys, args=args)
        return [(_CLAIMED, None) if row == b"claimed" or row == "claimed"
                else (ClaimResult(_text(row[0])), _record(c.message_id, row[1:]))
                for c, row in zip(claims, rows, strict=True)]

    async def apply(self, transitions: Sequence[Transition], *,
                    records: bool = False) -> list[Applied]:
        if not transitions:
            return []
        args = [*self._head(), "1" if records else "0"]
        for t in transitions:
            args += [t.to.value, t.provider_message_id or "", t.event_id,
                     orjson.dumps(t.final) if t.final else "", t.token, _note(t.code),
                     "1" if t.sent else ""]
        keys = [self._deadlines, *(self._prefix + t.message_id for t in transitions)]
        with self.failing_as("record message states"):
            rows = await self._apply(keys=keys, args=args)
        if not records:
            applied = [Applied(TransitionResult(_text(row)), None) for row in rows]
        else:
            applied = [Applied(TransitionResult(_text(row[0])),
                               _record(t.message_id, row[1:]) if row[1] else None)
                       for t, row in zip(transitions, rows, strict=True)]
        _count_applied(transitions, applied)
        return applied

    async def read(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        with self.failing_as("read message records"):
            rows = await self._read(keys=[self._prefix + i for i in ids])
        present = [(i, row) for i, row in zip(ids, rows, strict=True) if row[0] is not None]
        contexts = decode_many([(i, ctx if isinstance(ctx, bytes) else str(ctx).encode())
                                for i, (_s, _mid, ctx) in present if ctx])
        return {i: MessageRecord(_state(_text(state)), 1, _text(mid) if mid else None,
                                 contexts.get(i))
                for i, (state, mid, _ctx) in present}

    async def sweep(self, limit: int = 500, retry_s: float = 60.0) -> list[Expired]:
        now = self.clock()
        with self.failing_as("sweep message deadlines"):
            rows = await self._sweep(keys=[self._deadlines],
                                     args=[self.ttl_s, now, now + retry_s, self._prefix, limit])
        return [Expired(_text(row[0]), _record(_text(row[0]), row[1:])) for row in rows]

    async def swept(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        with self.failing_as("clear swept deadlines"):
            await self._swept(keys=[self._deadlines], args=[self._prefix, *message_ids])

    # -- what happened --

    async def announce(self, campaign_id: str, published: int, *, source: str = "") -> None:
        script = self.__dict__.get("_announce_script")
        if script is None:
            script = self.__dict__["_announce_script"] = self._client.register_script(
                _ANNOUNCE_LUA)
        with self.failing_as("count published messages"):
            await script(keys=[f"{self._prefix}~c:{campaign_id}", self._campaign_index],
                         args=[self.ttl_s, self.clock(), campaign_id, "p:" + _note(source),
                               published])

    async def clicked(self, clicks: Sequence[tuple[str, str, str]]) -> None:
        if not clicks:
            return
        args: list[str | bytes | int | float] = [self.ttl_s, self.clock(), self._prefix]
        for _id, url, event_id in clicks:
            args += [_note(url), _note(event_id)]
        with self.failing_as("count clicks"):
            await self._click(keys=[self._prefix + i for i, _url, _e in clicks], args=args)

    async def campaigns(self, limit: int = 20) -> list[CampaignCounts]:
        now = self.clock()
        with self.failing_as("list campaigns"):
            await self._client.zremrangebyscore(self._campaign_index, "-inf",
                                                f"({now - self.ttl_s}")
            ids = [_text(i) for i in
                   await self._client.zrevrange(self._campaign_index, 0, limit - 1)]
            async with self._client.pipeline(transaction=False) as pipe:
                for campaign_id in ids:
                    pipe.hgetall(f"{self._prefix}~c:{campaign_id}")
                rows = await pipe.execute()
        return [_campaign(i, row, now) for i, row in zip(ids, rows, strict=True) if row]

    async def campaign(self, campaign_id: str) -> CampaignCounts | None:
        with self.failing_as("read a campaign"):
            row = await self._client.hgetall(f"{self._prefix}~c:{campaign_id}")
        return _campaign(campaign_id, row, self.clock()) if row else None

    async def message(self, message_id: str) -> MessageView | None:
        with self.failing_as("read a message"):
            row = await self._client.hgetall(self._prefix + message_id)
        return _view(message_id, row) if row else None

    async def find(self, to: str, *, since: float | None = None,
                   limit: int = 50) -> list[MessageView]:
        now = self.clock()
        first = max(since if since is not None else 0.0, now - self.ttl_s - 86400)
        days = range(int(now // 86400), int(first // 86400) - 1, -1)  # newest first
        low, high = f"[{to}|".encode(), f"[{to}|".encode() + b"\xff"
        with self.failing_as("find messages"):
            async with self._client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.zrangebylex(f"{self._prefix}~to:{day}", low, high)
                buckets = await pipe.execute()
            found: list[tuple[float, str]] = []
            for members in buckets:
                for member in members:
                    _phone, at, message_id = _text(member).split("|", 2)
                    if since is None or int(at) >= since * 1000:
                        found.append((int(at) / 1000, message_id))
            # newest first; an id used again after the dedupe window is indexed twice
            ids = list(dict.fromkeys(m for _at, m in sorted(found, reverse=True)))[:limit]
            async with self._client.pipeline(transaction=False) as pipe:
                for message_id in ids:
                    pipe.hgetall(self._prefix + message_id)
                rows = await pipe.execute()
        return [_view(i, row) for i, row in zip(ids, rows, strict=True) if row]


    async def reopen(self, reopens: Sequence[Reopen]) -> list[tuple[ReopenResult,
                                                                     MessageRecord | None]]:
        if not reopens:
            return []
        script = self.__dict__.get("_reopen_script")
        if script is None:
            script = self.__dict__["_reopen_script"] = self._client.register_script(_REOPEN_LUA)
        args: list[str | bytes | int | float] = [
            *self._head(), ",".join(sorted(REPLAYABLE_CODES))]
        for item in reopens:
            args += [item.origin, item.fingerprint]
        keys = [self._deadlines, *(self._prefix + item.message_id for item in reopens)]
        with self.failing_as("reopen messages"):
            rows = await script(keys=keys, args=args)
        return [(ReopenResult(_text(row[0])),
                 _record(item.message_id, row[1:]) if row[1] else None)
                for item, row in zip(reopens, rows, strict=True)]


# -- reopening (``ics-sms dead-letters replay``) ---------------------------------------------
#
# A replay gives a dead-lettered message a new life only when ICS certainly never got it:
# the record is final, holds no ICS message id, and its final is one the worker decided
# before any ICS request took the message (REPLAYABLE_CODES; or ``expired`` with no code:
# its validity passed before it was sent; never the sweeper's ``no_receipt``, never a final
# a receipt made). The record then goes back to ``pending`` with the replay's fingerprint
# (so the replayed publish is claimed, and any older publish of it is a duplicate) and
# remembers in ``ro`` the dead letter it was reopened for: the same dead letter replayed
# again (a replay that stopped before removing it) re-points a record still ``pending``
# at the new publish, and is refused once that publish was claimed. Either way ICS gets
# the message at most once more, and only after it certainly never got it.

REPLAYABLE_CODES = frozenset({"sender_unauthorized", "retries_exhausted", "unknown_sender",
                              "sender_disabled", "dlt", "ics_refused"})
"""``error_code`` of the finals a worker records for a message ICS never took: refused
before any ICS request (unknown or disabled sender, DLT), ICS refused the sender's
credentials or the message itself, or every attempt failed before ICS took it. (A sender
with ``resend_uncertain`` opted into resending messages ICS may have, so one of its
``retries_exhausted`` messages may have reached ICS in an earlier attempt.)"""


@dataclass(frozen=True, slots=True)
class Reopen:
    """Reopen ``message_id`` for the replay of one of its dead letters."""

    message_id: str
    origin: str
    """:func:`fingerprint` of the dead letter (its request and its publish id): the record
    must be this publication's (a duplicate's dead letter never reopens its message)."""
    fingerprint: str
    """:func:`fingerprint` of the replay (the request it publishes and its new publish id)."""


class ReopenResult(StrEnum):
    REOPENED = "reopened"  # now pending for the replay: publish it
    MISSING = "missing"  # no record (never claimed, or past retention): publish it
    SENT = "sent"  # final, and ICS has or may have it: never replay
    ACTIVE = "active"  # not final (on its way, maybe an earlier replay): nothing to do
    OTHER = "other"  # the record is another publication's: not this dead letter's message


def _never_sent(state: str, mid: str | None, event_id: str, final: dict[str, str]) -> bool:
    """Whether a final record certainly never reached ICS (the in-memory twin of the
    script's test)."""
    if mid or event_id == "no_receipt" or not final:
        return False
    code = final.get("error_code", "")
    return code in REPLAYABLE_CODES or (state == State.EXPIRED.value and code == "")


_REOPEN_LUA = _COUNT_LUA + f"""
local out = {{}}
local base = string.sub(KEYS[2], 1, tonumber(ARGV[4]))
local plen = tonumber(ARGV[4])
local codes = {{}}
for code in string.gmatch(ARGV[5], '[^,]+') do codes[code] = true end
for i = 2, #KEYS do
  local key = KEYS[i]
  local id = string.sub(key, plen + 1)
  local origin, fp = ARGV[6 + (i - 2) * 2], ARGV[7 + (i - 2) * 2]
  local r = redis.call('HMGET', key, {_RECORD_FIELDS}, 'fp', 'fe', 'ro', 'c', 'h', 'ec')
  local s = r[1]
  local code
  if not s then
    code = 'missing'
  elseif r[6] and r[6] ~= origin and r[8] ~= origin then
    code = 'other'
  elseif final[s] then
    local safe = false
    if not r[3] and r[7] ~= 'no_receipt' and r[5] and r[5] ~= '' then
      local ok, f = pcall(cjson.decode, r[5])
      if ok and type(f) == 'table' then
        local ec = f['error_code']
        if type(ec) ~= 'string' then ec = '' end
        safe = codes[ec] or (s == 'expired' and ec == '')
      end
    end
    if safe then code = 'reopened' else code = 'sent' end
  elseif s == 'pending' and r[8] == origin then
    code = 'reopened'
  else
    code = 'active'
  end
  if code == 'reopened' then
    if final[s] then
      moved(r[9], s, 'pending')
      if r[11] and r[11] ~= '' then bump(r[9], 'e:' .. r[11], -1) end
      redis.call('HSET', key, 'h', note(r[10], 'pending', '1', 'replay'))
    end
    redis.call('HSET', key, 's', 'pending', 'fp', fp, 'a', '1', 'ro', origin)
    redis.call('HDEL', key, 'fe', 'fj', 'x', 'ct', 'le', 'ec')
    redis.call('EXPIRE', key, ARGV[1])
    redis.call('ZREM', KEYS[1], id)
  end
  out[#out + 1] = {{code, r[1] or '', r[2] or '1', r[3] or '', r[4] or '', r[5] or ''}}
end
flush(base, ARGV[1], tonumber(ARGV[2]))
return out
"""


_CLICK_LUA = _COUNT_LUA + """
local now = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local url, ev = ARGV[2 + i * 2], ARGV[3 + i * 2]
  local r = redis.call('HMGET', key, 's', 'a', 'c', 'h', 'ke')
  local ke = r[5] or ''
  if r[1] and not string.find(ke, '|' .. ev .. '|', 1, true) then
    if #ke > 2000 then ke = '|' .. string.sub(ke, -1000) end
    local k = redis.call('HINCRBY', key, 'k', 1)
    redis.call('HSET', key, 'h', note(r[4], 'clicked', r[2], url),
               'ke', ke .. '|' .. ev .. '|')
    bump(r[3], 'k', 1)
    if k == 1 then bump(r[3], 'ku', 1) end
  end
end
flush(ARGV[3], ARGV[1], now)
return 0
"""


_ANNOUNCE_LUA = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[4]) or '0') or 0
local n = tonumber(ARGV[5])
if n > old then redis.call('HSET', KEYS[1], ARGV[4], n) end
redis.call('HSETNX', KEYS[1], 't0', ARGV[2])
redis.call('HSET', KEYS[1], 't1', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 0
"""


def _field_map(row: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in row.items()}


def _number(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _campaign(campaign_id: str, row: Mapping[Any, Any],
              now: float) -> CampaignCounts:
    f = _field_map(row)
    states = {s: int(f[s]) for s in COUNTED_STATES if f.get(s, "0") not in ("", "0")}
    codes = {k[2:]: int(v) for k, v in f.items() if k.startswith("e:") and v != "0"}
    published = sum(int(v) for k, v in f.items() if k.startswith("p:"))
    first, last = _number(f.get("t0")), _number(f.get("t1"))
    return CampaignCounts(campaign_id, states, int(f.get("n", 0)), published, codes,
                          int(f.get("sg", 0)), int(f.get("k", 0)), int(f.get("ku", 0)),
                          first or None, last or None,
                          decayed_rate(_number(f.get("rv")), _number(f.get("rt")), now), now)


def _view(message_id: str, row: Mapping[Any, Any]) -> MessageView:
    f = _field_map(row)
    context = None
    if f.get("ctx"):
        try:
            context = MessageContext.from_value(message_id, f["ctx"])
        except ValueError:
            context = None
    timeline = []
    for line in f.get("h", "").split("\n"):
        parts = line.split("|", 3)
        if len(parts) == 4:
            at, state, attempt, note = parts
            timeline.append(TimelineEntry(_number(at), state,
                                          int(attempt) if attempt.isdigit() else 1, note))
    final = orjson.loads(f["fj"]) if f.get("fj") else {}
    return MessageView(message_id, f.get("s", ""),
                       f.get("c") or (context.campaign_id if context else None),
                       context.sender if context else None, f.get("to") or None,
                       int(f["a"]) if f.get("a", "").isdigit() else 1, f.get("mid") or None,
                       context.segments if context else None,
                       final if isinstance(final, dict) else {}, int(f.get("k", 0) or 0),
                       _number(f.get("t0")) or None, tuple(timeline))


def open_message_store(settings: Settings) -> MessageStore:
    """The store the settings name: Redis at ``redis_url``, in-process for ``memory://``."""
    if settings.redis_url.startswith(MEMORY_URL):
        return InMemoryMessageStore(window_s=settings.dedupe_window_s,
                                    receipt_deadline_s=settings.receipt_deadline_s,
                                    retention_s=settings.retention_s)
    return RedisMessageStore(settings.redis_url, prefix=f"ics-sms:{settings.namespace}msg:",
                             window_s=settings.dedupe_window_s,
                             receipt_deadline_s=settings.receipt_deadline_s,
                             retention_s=settings.retention_s)
