"""Submitting one sender's batch to ICS and turning the answer into outcomes."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from pydantic import SecretStr

from ics_sms.broker.base import Delivery, Outgoing
from ics_sms.schemas.ics import RecordResult
from ics_sms.schemas.messages import TERMINAL_STATUSES, Status, make_event_id
from ics_sms.schemas.senders import ClickTracking, Sender
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import ClaimResult, MessageRecord, State, Transition
from ics_sms.workers.ics import Batch, IcsClient, SubmitResult
from ics_sms.workers.jobs import Job, Refusal
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import MAX_PARKS, AttemptPolicy, Disposition

__all__ = ["SENDER_UNAUTHORIZED", "BatchOutcome", "SenderState", "Submitter", "Verdicts"]

log = structlog.get_logger(__name__)

BatchOutcome = list[tuple[Delivery, Sequence[Outgoing]]]

SENDER_UNAUTHORIZED = "sender_unauthorized"
"""error_code of messages that waited too long for their sender's credentials."""


class SenderState:
    """Per-process runtime state of a sender: whether an episode of refused credentials is
    under way (logged once per process, at its start), and a pause this process decided
    that the fleet has not been told yet. The pause itself lives in the rate store, which
    every worker reads before each batch (:mod:`ics_sms.stores.rates`)."""

    __slots__ = ("refused", "unshared_pause_s")

    def __init__(self) -> None:
        self.refused = False
        self.unshared_pause_s = 0.0

    def __repr__(self) -> str:
        return (f"<SenderState refused={self.refused} "
                f"unshared_pause_s={self.unshared_pause_s:g}>")

    def take_pause(self) -> float:
        """The pause to record for the fleet (0: none), once."""
        pause_s, self.unshared_pause_s = self.unshared_pause_s, 0.0
        return pause_s


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
        refused = sorted(name for name, state in self.states.items() if state.refused)
        return f"<Submitter {self._policy!r} refused={refused}>"

    def state(self, sender: Sender) -> SenderState:
        return self.states.setdefault(sender.name, SenderState())

    def park(self, jobs: Sequence[Job], delay_s: float, reason: str, now: datetime) -> BatchOutcome:
        """Send the jobs back through a delay queue without counting an attempt."""
        items: BatchOutcome = []
        for job in jobs:
            if job.parked >= MAX_PARKS:
                items.append(self._fail(job, f"gave up after {job.parked} waits: {reason}", now))
                continue
            items.append((job.delivery, [self._out.retry_copy(
                job.delivery, job.sender.lane, delay_s, attempt=job.attempt, reason=reason,
                parked=job.parked + 1)]))
        return items

    async def call(self, sender: Sender, jobs: Sequence[Job], token: SecretStr) -> SubmitResult:
        """Submit ``jobs`` (all of ``sender``): one datasend request, more when ICS refuses it.

        A request ICS refuses as a whole (HTTP 400/413/422 with ICS's body: REJECT) carries
        no verdict on each record, and ICS took none of them. One bad record must not sink
        the others, so a refused request of more than one record is split in halves and the
        halves sent again, level by level (a level's requests concurrently), until the
        refusals are down to single records; only those end refused (a record answer with
        ICS's reason). Halves that fail otherwise are not split further (an UNCERTAIN half
        is never resent): their records carry that failure in ``failed``.

        Bounds: the depth is ``ceil(log2 n)`` for ``n`` records, and the split may spend at
        most ``4 * ceil(log2 n)`` extra requests (:meth:`split_budget`), enough to isolate
        any two bad records. The worst case is ``1 + 4 * ceil(log2 n)`` requests for the
        batch (41 for 1,000 records). Parts still refused when the budget is spent are
        RETRY (ICS took none of them; they come back in other batches), and a throttled or
        credential-refused half stops the split: the parts not yet sent share its result.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await self._ics.submit(self._request(sender, jobs), token)
        if first.disposition is not Disposition.REJECT or len(jobs) < 2:
            return first
        result = await self._isolate(sender, jobs, token, first)
        result.latency_s = loop.time() - started
        return result

    def _request(self, sender: Sender, jobs: Sequence[Job]) -> Batch:
        records = [
            IcsClient.record(job.request.to, sender.sender_id, job.text, job.smsgid,
                             sender.dlt_entity_id, job.request.dlt_template_id)
            for job in jobs
        ]
        return IcsClient.build(
            sender.username, records,
            dlrurl=self._settings.tracking_url(sender.tracking_path()),
            urlshortening=sender.click_tracking is ClickTracking.ICS,
        )

    async def _isolate(self, sender: Sender, jobs: Sequence[Job], token: SecretStr,
                       refused: SubmitResult) -> SubmitResult:
        """Split the batch ICS refused as a whole until the refusals are single records."""
        merged = SubmitResult(status=refused.status, reason=refused.reason)
        budget = self.split_budget(len(jobs))
        level: list[Sequence[Job]] = [jobs]
        while level:
            sendable = level[:budget // 2]
            budget -= 2 * len(sendable)
            halves = [half for part in sendable for half in self._halves(part)]
            answers = await asyncio.gather(*(self._ics.submit(self._request(sender, half), token)
                                             for half in halves))
            merged.requests += len(halves)
            left = [job for part in level[len(sendable):] for job in part]
            level = []
            for half, answer in zip(halves, answers, strict=True):
                if answer.retry_after_s is not None:
                    merged.retry_after_s = max(merged.retry_after_s or 0.0,
                                               answer.retry_after_s)
                if answer.ok:
                    merged.results.update(answer.results)
                elif answer.disposition is not Disposition.REJECT:
                    self._unanswered(merged, half, answer)
                elif len(half) == 1:
                    merged.results[half[0].smsgid] = RecordResult(smsgid=half[0].smsgid,
                                                                  error=answer.reason)
                else:
                    level.append(half)
            stop = next((a for a in answers if a.disposition in self._STOP_SPLITTING), None)
            if stop is not None:
                left += [job for part in level for job in part]
                level = []
            self._unanswered(merged, left, stop or SubmitResult(
                disposition=Disposition.RETRY, status=refused.status,
                reason=f"not isolated within {self.split_budget(len(jobs))} requests: "
                       f"{refused.reason}"))
        log.info("ICS refused a batch; split it to isolate the refused records",
                 sender=sender.name, messages=len(jobs), requests=merged.requests,
                 refused=sum(not answer.accepted for answer in merged.results.values()))
        return self._whole(merged)

    _STOP_SPLITTING = (Disposition.THROTTLED, Disposition.PAUSE_SENDER)
    """A half answered like this ends a split: ICS wants fewer requests, not more."""

    @staticmethod
    def split_budget(records: int) -> int:
        """Extra requests :meth:`call` may spend isolating the bad records of a batch ICS
        refused as a whole: two per level for each of two bad records."""
        return 4 * math.ceil(math.log2(records)) if records > 1 else 0

    @staticmethod
    def _halves(jobs: Sequence[Job]) -> tuple[Sequence[Job], Sequence[Job]]:
        middle = len(jobs) // 2
        return jobs[:middle], jobs[middle:]

    @staticmethod
    def _unanswered(merged: SubmitResult, jobs: Sequence[Job], answer: SubmitResult) -> None:
        for job in jobs:
            merged.failed[job.smsgid] = answer

    @staticmethod
    def _whole(merged: SubmitResult) -> SubmitResult:
        """``merged`` as one batch-wide failure when no record was answered and every part
        failed alike (so a 401 during a split still pauses the sender), else as it is."""
        parts = {id(part): part for part in merged.failed.values()}
        if merged.results or len({part.disposition for part in parts.values()}) != 1:
            return merged
        part = next(iter(parts.values()))
        return SubmitResult(disposition=part.disposition, status=part.status,
                            reason=part.reason, retry_after_s=merged.retry_after_s,
                            requests=merged.requests)

    def interpret(self, sender: Sender, jobs: Sequence[Job], result: SubmitResult,
                  now: datetime) -> Verdicts:
        """What the answer means for each claimed job: what to publish, and the state
        transition to record (before publishing) for its message. A record ICS may have
        taken (UNCERTAIN) is never sent again unless its sender opted in."""
        out = Verdicts()
        for job in jobs:
            disposition = result.disposition_of(job.smsgid)
            if disposition is None:
                self._record_outcome(job, result, now, out)
                continue
            reason = result.reason_of(job.smsgid)
            match disposition:
                case Disposition.UNCERTAIN:
                    self._uncertain(job, reason, now, out)
                case Disposition.THROTTLED:
                    wait = result.retry_after_s if result.retry_after_s is not None else 1.0
                    self._park([job], wait, reason, now, out)
                case Disposition.PAUSE_SENDER:
                    self._unauthorized(job, self._pause(sender, result), reason, now, out)
                case Disposition.REJECT:
                    self._reject(job, "ics_refused", reason, now, out)
                case _:
                    self._retry(job, reason, now, out)
        return out

    def _pause(self, sender: Sender, result: SubmitResult) -> float:
        """ICS refused the sender's credentials: pause it in every worker (the caller
        records :meth:`SenderState.take_pause` in the rate store; logged once per episode
        and process: until ICS accepts a request of the sender again)."""
        state = self.state(sender)
        pause_s = self._settings.sender_pause_s
        if not state.refused:
            state.refused = True
            log.error("ICS refused the sender's credentials; its messages wait, and fail "
                      "(sender_unauthorized) if still refused after the bound",
                      sender=sender.name, status=result.status, pause_s=pause_s,
                      bound_s=self._settings.sender_unauthorized_after_s)
        state.unshared_pause_s = pause_s
        return pause_s

    def accepted(self, sender: Sender) -> None:
        """ICS accepted a request of the sender: an episode of refusals is over."""
        state = self.states.get(sender.name)
        if state is not None and state.refused:
            state.refused = False
            log.info("ICS accepts the sender's credentials again", sender=sender.name)

    def hold(self, jobs: Sequence[Job], wait_s: float, reason: str, now: datetime) -> Verdicts:
        """Claimed jobs of a sender that is paused (credentials refused): they wait."""
        out = Verdicts()
        for job in jobs:
            self._unauthorized(job, wait_s, reason, now, out)
        return out

    def _unauthorized(self, job: Job, wait_s: float, reason: str, now: datetime,
                      out: Verdicts) -> None:
        """Wait (no attempt spent) while the sender's credentials are refused, for at most
        ``sender_unauthorized_after_s`` counted from the first refusal the message met;
        then end ``failed`` with ``error_code=sender_unauthorized``."""
        epoch = int(now.timestamp())
        since = job.refused_since if job.refused_since is not None else epoch
        left = self._settings.sender_unauthorized_after_s - (epoch - since)
        if left <= 0:
            error = (f"ICS refused the sender's credentials for {epoch - since} s "
                     f"(the bound is {self._settings.sender_unauthorized_after_s:g} s): {reason}")
            out.add(job, [
                self._out.event(job.request, Status.FAILED, now, sender=job.sender.name,
                                attempt=job.attempt, error=error,
                                error_code=SENDER_UNAUTHORIZED),
                self._out.dead_copy(job.delivery, SENDER_UNAUTHORIZED, error),
            ], _final(job, Status.FAILED, SENDER_UNAUTHORIZED, error))
            return
        out.add(job, [self._out.retry_copy(
            job.delivery, job.sender.lane, min(wait_s, max(left, 1.0)), attempt=job.attempt,
            reason=reason, parked=min(job.parked + 1, MAX_PARKS), refused_since=since)],
            _release(job))

    def triage(self, jobs: Sequence[Job],
               claims: Sequence[tuple[ClaimResult, MessageRecord | None]],
               now: datetime) -> tuple[list[Job], BatchOutcome]:
        """The claimed jobs (to send), and what to do with the others: a duplicate is
        refused, a message claimed by another batch comes back after that claim's lease,
        a message ICS may have waits for its receipt, a redelivery of a message already
        submitted or ended re-emits its events from the record. None is sent."""
        send: list[Job] = []
        items: BatchOutcome = []
        for job, (claim, record) in zip(jobs, claims, strict=True):
            if claim is ClaimResult.CLAIMED:
                send.append(job)
            elif claim is ClaimResult.DUPLICATE:
                items.append(self._duplicate(job, now))
            elif claim is ClaimResult.WAIT and record is not None:
                # Another batch claimed it and has not called ICS yet: look again when
                # its lease ends (its worker may have died before sending).
                left = record.lease_until - time.time()  # the store's clock
                wait = min(max(left, 1.0), self._settings.claim_lease_s)
                items.extend(self.park([job], wait, "claimed by another batch", now))
            elif claim is ClaimResult.BUSY:
                items.append((job.delivery, []))
            elif record is not None:
                items.append((job.delivery, self._replay(job, record, now)))
            else:
                items.append((job.delivery, []))
        return send, items

    def refuse(self, refusals: Sequence[Refusal],
               claims: Sequence[tuple[ClaimResult, MessageRecord | None]],
               now: datetime) -> Verdicts:
        """Refusals made before any batch, after claiming their ids (one round trip): the
        claimed end ``rejected`` (their final status, recorded); a reused id gets the
        non-final ``duplicate`` refusal; a redelivery re-emits the recorded refusal, and a
        message already in ICS's hands is left to its receipt."""
        out = Verdicts()
        for refusal, (claim, record) in zip(refusals, claims, strict=True):
            delivery, code, error = refusal.delivery, refusal.code, refusal.error
            if claim is ClaimResult.CLAIMED:
                out.add_settled(delivery, [self._refusal_event(refusal, now, code, error),
                                           self._out.dead_copy(delivery, code, error)],
                                _refused(refusal))
            elif claim is ClaimResult.DUPLICATE:
                dup = ("another message with this message_id was published within the "
                       "dedupe window")
                out.items.append((delivery, [
                    self._refusal_event(refusal, now, "duplicate", dup, final=False,
                                        discriminator=f"duplicate:{refusal.claim().fingerprint}"),
                    self._out.dead_copy(delivery, "duplicate", dup)]))
            elif (claim is ClaimResult.DONE and record is not None
                  and record.final.get("status") == Status.REJECTED.value):
                code, error = record.final.get("error_code", code), record.final.get("error", "")
                out.items.append((delivery, [self._refusal_event(refusal, now, code, error),
                                             self._out.dead_copy(delivery, code, error)]))
            else:  # claimed elsewhere, at ICS, or ended otherwise: its own events say it
                out.items.append((delivery, []))
        return out

    def _refusal_event(self, refusal: Refusal, now: datetime, code: str, error: str, *,
                       final: bool | None = None, discriminator: str | None = None) -> Outgoing:
        if refusal.request is None:
            return self._out.orphan_event(refusal.message_id, Status.REJECTED, now, error,
                                          refusal.campaign_id, error_code=code, final=final,
                                          discriminator=discriminator or code)
        return self._out.event(refusal.request, Status.REJECTED, now, sender=refusal.sender,
                               attempt=refusal.attempt, error=error, error_code=code,
                               final=final, discriminator=discriminator)

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
        answer = result.results[job.smsgid]
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


def _gave_up(job: Job, reason: str) -> str:
    return f"gave up after {job.parked} waits: {reason}"


def _release(job: Job) -> Transition:
    """ICS certainly did not take it: it may be claimed again (only while this batch's
    claim holds: a stale batch cannot release a message someone else sent)."""
    return Transition(job.request.message_id, State.PENDING, token=job.token)


def _refused(refusal: Refusal) -> Transition:
    """The refusal as the message's final status (event id as its event has it)."""
    fields = {"status": Status.REJECTED.value, "error_code": refusal.code,
              "error": refusal.error[:500]}
    return Transition(refusal.message_id, State.REJECTED,
                      event_id=make_event_id(refusal.message_id, Status.REJECTED, refusal.code),
                      final=fields)


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
        self.add_settled(job.delivery, messages, mark)

    def add_settled(self, delivery: Delivery, messages: Sequence[Outgoing],
                    mark: Transition) -> None:
        self.items.append((delivery, messages))
        self.marks.append(mark)

    def uncertain(self, job: Job) -> None:
        """Acked without an event: the message waits for its receipt (or its deadline)."""
        self.add(job, [], Transition(job.request.message_id, State.UNCERTAIN))
        self.uncertain_count += 1
