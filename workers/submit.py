"""Submitting one sender's batch to ICS and turning the answer into outcomes."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from pydantic import SecretStr

from ics_sms.broker.base import Delivery, Outgoing
from ics_sms.schemas.messages import TERMINAL_STATUSES, Status, make_event_id
from ics_sms.schemas.senders import ClickTracking, Sender
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import ClaimResult, MessageRecord, State, Transition
from ics_sms.workers.ics import IcsClient, SubmitResult
from ics_sms.workers.jobs import Job
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import MAX_PARKS, AttemptPolicy, Disposition

__all__ = ["BatchOutcome", "SenderState", "Submitter", "Verdicts", "may_have_reached_ics"]

log = structlog.get_logger(__name__)

BatchOutcome = list[tuple[Delivery, Sequence[Outgoing]]]


class SenderState:
    """Per-sender runtime state: paused after a 401/403 until a monotonic instant."""

    __slots__ = ("paused_until",)

    def __init__(self) -> None:
        self.paused_until = 0.0

    def __repr__(self) -> str:
        return f"<SenderState paused_for={self.paused_for():.1f}s>"

    def paused_for(self) -> float:
        return max(self.paused_until - time.monotonic(), 0.0)


class Submitter:
    """Calls ICS for a batch and maps the answer to events, retries and dead letters."""

    def __init__(self, settings: Settings, ics: IcsClient, outcomes: Outcomes,
                 policy: AttemptPolicy, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._ics = ics
        self._out = outcomes
        self._policy = policy
        self._rng = rng or random.Random()
        self.states: dict[str, SenderState] = {}

    def __repr__(self) -> str:
        paused = sorted(name for name, state in self.states.items() if state.paused_for())
        return f"<Submitter {self._policy!r} paused={paused}>"

    def state(self, sender: Sender) -> SenderState:
        return self.states.setdefault(sender.name, SenderState())

    def park(self, jobs: Sequence[Job], delay_s: float, reason: str, now: datetime) -> BatchOutcome:
        """Send the jobs back through a delay queue without counting an attempt."""
        items: BatchOutcome = []
        for job in jobs:
            if job.parked >= MAX_PARKS:
                items.append(self._fail(job, _gave_up(job, reason), now))
                continue
            items.append((job.delivery, [self._out.retry_copy(
                job.delivery, job.sender.lane, delay_s, attempt=job.attempt, reason=reason,
                parked=job.parked + 1)]))
        return items

    async def call(self, sender: Sender, jobs: Sequence[Job], token: SecretStr) -> SubmitResult:
        """One datasend request for ``jobs``, all of ``sender``."""
        records = [
            IcsClient.record(job.request.to, sender.sender_id, job.text, job.smsgid,
                             sender.dlt_entity_id, job.request.dlt_template_id)
            for job in jobs
        ]
        request = IcsClient.build(
            sender.username, records,
            dlrurl=self._settings.tracking_url(sender.tracking_path()),
            urlshortening=sender.click_tracking is ClickTracking.ICS,
        )
        return await self._ics.submit(request, token)

    def interpret(self, sender: Sender, jobs: Sequence[Job], result: SubmitResult,
                  now: datetime) -> Verdicts:
        """What the answer means for each claimed job: what to publish, and the state
        transition to record (before publishing) for its message."""
        out = Verdicts()
        if result.ok:
            for job in jobs:
                self._record_outcome(job, result, now, out)
            return out
        if may_have_reached_ics(result):
            for job in jobs:
                self._uncertain(job, result.reason, now, out)
            return out
        match result.disposition:
            case Disposition.THROTTLED:
                wait = result.retry_after_s if result.retry_after_s is not None else 1.0
                self._park(jobs, wait, result.reason, now, out)
            case Disposition.PAUSE_SENDER:
                state = self.state(sender)
                pause_s = self._settings.sender_pause_s
                if state.paused_for() == 0:
                    log.error("ICS refused the sender's credentials; pausing the sender",
                              sender=sender.name, status=result.status, pause_s=pause_s)
                state.paused_until = time.monotonic() + pause_s
                self._park(jobs, pause_s, result.reason, now, out)
            case Disposition.REJECT:
                for job in jobs:
                    self._reject(job, "ics_refused", result.reason, now, out)
            case _:
                for job in jobs:
                    self._retry(job, result.reason, now, out)
        return out

    def triage(self, jobs: Sequence[Job],
               claims: Sequence[tuple[ClaimResult, MessageRecord | None]],
               now: datetime) -> tuple[list[Job], BatchOutcome]:
        """The claimed jobs (to send), and what to do with the others: a duplicate is
        refused, a message in flight waits for its receipt, a redelivery of a message
        already submitted or ended re-emits its events from the record. None is sent."""
        send: list[Job] = []
        items: BatchOutcome = []
        for job, (claim, record) in zip(jobs, claims, strict=True):
            if claim is ClaimResult.CLAIMED:
                send.append(job)
            elif claim is ClaimResult.DUPLICATE:
                items.append(self._duplicate(job, now))
            elif claim is ClaimResult.BUSY:
                items.append((job.delivery, []))
            elif record is not None:
                items.append((job.delivery, self._replay(job, record, now)))
            else:
                items.append((job.delivery, []))
        return send, items

    def _duplicate(self, job: Job, now: datetime) -> tuple[Delivery, Sequence[Outgoing]]:
        error = "another message with this message_id was published within the dedupe window"
        return (job.delivery, [
            self._out.event(job.request, Status.REJECTED, now, sender=job.sender.name,
                            attempt=job.attempt, error=error, error_code="duplicate",
                            discriminator=f"duplicate:{job.fingerprint}", final=False),
            self._out.dead_copy(job.delivery, "duplicate", error),
        ])

    def _replay(self, job: Job, record: MessageRecord, now: datetime) -> list[Outgoing]:
        """The events this worker published for the message, again (same event ids)."""
        messages = []
        if record.provider_message_id:
            messages.append(self._out.event(
                job.request, Status.SUBMITTED, now, sender=job.sender.name,
                attempt=record.attempt, provider_message_id=record.provider_message_id,
                segments=job.info.segments, encoding=job.info.encoding))
        final = record.final
        if final.get("status") in _FINAL_VALUES:
            code, error = final.get("error_code", ""), final.get("error", "")
            messages.append(self._out.event(job.request, Status(final["status"]), now,
                                            sender=job.sender.name, attempt=record.attempt,
                                            error=error or None, error_code=code or None))
            messages.append(self._out.dead_copy(job.delivery, code or final["status"], error))
        return messages

    def _record_outcome(self, job: Job, result: SubmitResult, now: datetime,
                        out: Verdicts) -> None:
        answer = result.results.get(job.smsgid)
        if answer is None:
            self._uncertain(job, "ICS gave no answer for this record", now, out)
            return
        if not answer.accepted:
            self._reject(job, "ics_refused", answer.error or "refused by ICS", now, out)
            return
        out.add(job, [self._out.event(
            job.request, Status.SUBMITTED, now, sender=job.sender.name, attempt=job.attempt,
            provider_message_id=answer.mid, segments=job.info.segments,
            encoding=job.info.encoding)],
            Transition(job.request.message_id, State.SUBMITTED, provider_message_id=answer.mid))

    def _uncertain(self, job: Job, reason: str, now: datetime, out: Verdicts) -> None:
        """ICS may have taken it: never send it again, unless its sender opted in to
        resending (then it is retried as a new attempt, counted in ``resends``)."""
        if job.sender.resend_uncertain is True and not self._policy.exhausted(job.attempt):
            out.resends += 1
            self._retry(job, f"resend, ICS may have accepted it: {reason}", now, out)
        else:
            out.uncertain(job)

    def expire(self, jobs: Sequence[Job], now: datetime) -> Verdicts:
        """Claimed jobs whose ``expires_at`` passed before they could be sent."""
        out = Verdicts()
        error = "expired before it could be sent"
        for job in jobs:
            out.add(job, [
                self._out.event(job.request, Status.EXPIRED, now, sender=job.sender.name,
                                attempt=job.attempt, error=error),
                self._out.dead_copy(job.delivery, "expired", "expires_at passed before sending"),
            ], _final(job, Status.EXPIRED, "", error))
        return out

    def retry(self, jobs: Sequence[Job], reason: str, now: datetime) -> Verdicts:
        """Transient trouble on our side (e.g. the link store): try these jobs again later
        (their claims are released: ICS never saw them)."""
        out = Verdicts()
        for job in jobs:
            self._retry(job, reason, now, out)
        return out

    def _park(self, jobs: Sequence[Job], delay_s: float, reason: str, now: datetime,
              out: Verdicts) -> None:
        for (delivery, messages), job in zip(self.park(jobs, delay_s, reason, now), jobs,
                                             strict=True):
            out.items.append((delivery, messages))
            out.marks.append(_release(job) if job.parked < MAX_PARKS else _final(
                job, Status.FAILED, "retries_exhausted", _gave_up(job, reason)))

    def _retry(self, job: Job, reason: str, now: datetime, out: Verdicts) -> None:
        if job.request.expired(now):
            error = f"expired while retrying: {reason}"
            out.add(job, [
                self._out.event(job.request, Status.EXPIRED, now, sender=job.sender.name,
                                attempt=job.attempt, error=error),
                self._out.dead_copy(job.delivery, "expired", reason),
            ], _final(job, Status.EXPIRED, "", error))
            return
        if self._policy.exhausted(job.attempt):
            item = self._fail(job, f"gave up after {job.attempt} attempts: {reason}", now)
            out.add(job, item[1], _final(job, Status.FAILED, "retries_exhausted",
                                         f"gave up after {job.attempt} attempts: {reason}"))
            return
        delay = self._policy.backoff(job.attempt, self._rng)
        out.add(job, [self._out.retry_copy(job.delivery, job.sender.lane, delay,
                                           attempt=job.attempt + 1, reason=reason)],
                _release(job))

    def _fail(self, job: Job, error: str, now: datetime) -> tuple[Delivery, Sequence[Outgoing]]:
        return (job.delivery, [
            self._out.event(job.request, Status.FAILED, now, sender=job.sender.name,
                            attempt=job.attempt, error=error, error_code="retries_exhausted"),
            self._out.dead_copy(job.delivery, "retries_exhausted", error),
        ])

    def _reject(self, job: Job, code: str, error: str, now: datetime, out: Verdicts) -> None:
        out.add(job, [
            self._out.event(job.request, Status.REJECTED, now, sender=job.sender.name,
                            attempt=job.attempt, error=error, error_code=code),
            self._out.dead_copy(job.delivery, code, error),
        ], _final(job, Status.REJECTED, code, error))


_FINAL_VALUES = frozenset(status.value for status in TERMINAL_STATUSES)


def may_have_reached_ics(result: SubmitResult) -> bool:
    """True when ICS may have accepted some or all records of a failed call: they must
    not be sent again. ``Disposition.UNCERTAIN`` says so; until the ICS adapter tells
    every such case apart, a RETRY after the request could have been written counts too:
    a 5xx other than 503, a 200 we could not read, a timeout, a connection that broke
    (only a refused connection or a failed DNS lookup, ``ClientConnector*``, is certain)."""
    if result.disposition is Disposition.UNCERTAIN:
        return True
    if result.disposition is not Disposition.RETRY:
        return False
    if result.status is not None:
        return result.status == 200 or (result.status >= 500 and result.status != 503)
    return "ClientConnector" not in result.reason


def _gave_up(job: Job, reason: str) -> str:
    return f"gave up after {job.parked} waits: {reason}"


def _release(job: Job) -> Transition:
    return Transition(job.request.message_id, State.PENDING)


def _final(job: Job, status: Status, code: str, error: str) -> Transition:
    fields = {"status": status.value, "error_code": code, "error": error[:500]}
    return Transition(job.request.message_id, State(status.value),
                      event_id=make_event_id(job.request.message_id, status, code),
                      final=fields)


@dataclass(slots=True)
class Verdicts:
    """The outcome of a batch: what to settle per delivery, and the state transitions to
    record (in one round trip) before settling."""

    items: BatchOutcome = field(default_factory=list)
    marks: list[Transition] = field(default_factory=list)
    uncertain_count: int = 0
    resends: int = 0
    """Uncertain messages sent again because their sender opted in (``resend_uncertain``)."""

    def add(self, job: Job, messages: Sequence[Outgoing], mark: Transition) -> None:
        self.items.append((job.delivery, messages))
        self.marks.append(mark)

    def uncertain(self, job: Job) -> None:
        """Acked without an event: the message waits for its receipt (or its deadline)."""
        self.add(job, [], Transition(job.request.message_id, State.UNCERTAIN))
        self.uncertain_count += 1
