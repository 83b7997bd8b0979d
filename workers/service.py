"""The worker: consume send requests, batch per sender, submit to ICS, settle.

One :class:`Worker` per process. For each broker connection it runs a :class:`_Session`
that owns the consumers, the in-flight submissions and a
:class:`~ics_sms.workers.batching.Batcher` for the per-sender batches; when the connection
drops the session is discarded (the broker requeues what was unacked) and a new one starts.
Service and promotional lanes have their own consumers and their own limits on batches in
flight, so service traffic never waits behind a promotional backlog; a worker may also
consume one lane only (``ICS_SMS_WORKER_LANES``), so that service-lane workers share no
process with promotional traffic. What a worker holds unacknowledged is bounded by what its
senders can send before the broker's consumer timeout (:mod:`ics_sms.workers.holding`).

Effectively once: a batch is claimed in the message store (one round trip; the record
keeps what the receiver needs) and marked ``uncertain`` just before its ICS request (one
round trip, only where its claim still holds); only those messages are sent; the outcome
is recorded (one round trip) before its events are published and its deliveries acked
(:mod:`ics_sms.stores.messages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog

from ics_sms.broker.base import Broker, ConnectionLost, Consumer, Delivery, Outgoing
from ics_sms.broker.connect import connect_once, connect_with_backoff
from ics_sms.schemas.senders import Lane, Sender, Senders
from ics_sms.schemas.settings import Settings, WorkerLanes
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import HEADER_ATTEMPT
from ics_sms.stores.links import LinkStore, LinkStoreError, ShortLink, open_link_store
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.messages import (
    MessageStore,
    MessageStoreError,
    State,
    Transition,
    TransitionResult,
    open_message_store,
)
from ics_sms.stores.rates import Grant, RateStore, RateStoreError, open_rate_store
from ics_sms.workers.batching import Batcher
from ics_sms.workers.heartbeat import beating
from ics_sms.workers.holding import HoldBound
from ics_sms.workers.ics import IcsClient
from ics_sms.workers.jobs import Job, JobFactory, Refusal, Settle
from ics_sms.workers.metrics import (
    BATCH_SIZE,
    CONSUMED,
    ICS_DURATION,
    ICS_REQUESTS,
    IN_FLIGHT,
    count_outcomes,
)
from ics_sms.workers.notices import ThrottledLog
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import AttemptPolicy
from ics_sms.workers.ratelimit import SenderRates
from ics_sms.workers.settle import AckTracker, Settler
from ics_sms.workers.submit import BatchOutcome, Submitter, Verdicts
from ics_sms.workers.sweeper import Sweeper, sweep_interval_s
from ics_sms.workers.window import Clock, PromoWindow, system_clock

__all__ = ["PARKED_BEHIND", "Worker", "WorkerStats", "consumed_lanes"]

log = structlog.get_logger(__name__)

BrokerFactory = Callable[[Settings], Awaitable[Broker]]
"""One attempt to open the settings' broker; raises :class:`ConnectionLost` when it cannot."""
_WINDOW_POLL_S = 5.0
_DRAIN_TIMEOUT_S = 30.0
_REPUBLISH_DELAY_S = 15.0
"""When the broker refuses a batch's events, the deliveries come back after this."""
_STORE_WAIT_S = 5.0
"""How long messages wait (parked, no attempt spent) while the message store is down."""

PARKED_BEHIND = ThrottledLog("sender holds what it can send before the consumer timeout; "
                             "parking its further messages", level="info")
"""One line per sender at most every few seconds while its deliveries are parked."""


def consumed_lanes(setting: WorkerLanes) -> tuple[Lane, ...]:
    """The lanes whose queues a worker with ``ICS_SMS_WORKER_LANES=setting`` consumes."""
    return tuple(Lane) if setting == "all" else (Lane(setting),)


@dataclass(slots=True)
class WorkerStats:
    received: int = 0
    submitted_batches: int = 0
    settled: int = 0
    requeued: int = 0
    ics_requests: int = 0
    reconnects: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


async def _default_broker(settings: Settings) -> Broker:
    return await connect_once(settings, name="ics-sms worker")


class Worker:
    """Worker process; durable state lives in the broker (messages) and in the message
    store (each message's record: claimed, submitted, uncertain, final)."""

    def __init__(self, settings: Settings, senders: Senders | LiveSenders, *,
                 clock: Clock = system_clock,
                 broker_factory: BrokerFactory = _default_broker,
                 link_store: LinkStore | None = None,
                 message_store: MessageStore | None = None,
                 rate_store: RateStore | None = None) -> None:
        if not settings.callback_secret.get_secret_value():
            raise ValueError("ICS_SMS_CALLBACK_SECRET must be set: smsgids carry its MAC")
        self.settings = settings
        self.live = (senders if isinstance(senders, LiveSenders)
                     else LiveSenders.fixed(senders, settings))
        self.clock = clock
        self._broker_factory = broker_factory
        previous = settings.callback_secret_previous
        self.signer = SmsgidSigner(settings.callback_secret.get_secret_value(),
                                   [previous.get_secret_value()] if previous else [])
        self.window = PromoWindow.of(settings.promo_window_start, settings.promo_window_end,
                                     settings.promo_timezone)
        self.policy = AttemptPolicy(settings.max_attempts, settings.backoff_base_s,
                                    settings.backoff_cap_s)
        self.outcomes = Outcomes(settings.topology)
        self.links = link_store or open_link_store(settings)
        self.messages = message_store or open_message_store(settings)
        self.rates = SenderRates(rate_store or open_rate_store(settings))
        self.stats = WorkerStats()
        self.lanes = consumed_lanes(settings.worker_lanes)
        self.hold = HoldBound(settings.consumer_timeout_s)
        self.ready = asyncio.Event()
        self._claim_prefix = secrets.token_hex(6)
        self._claims = itertools.count(1)
        self._submitter: Submitter | None = None

    @property
    def senders(self) -> Senders:
        """The senders in use now (they change while the worker runs)."""
        return self.live.current

    def credentials_of(self, sender: Sender) -> Sender:
        """The definition whose ICS token a batch of ``sender`` goes out with: the current
        one while it names the same ICS user (a token rotated after the batch's messages
        were taken in is used at once: ICS may refuse the old one already), else the
        batch's own."""
        current = self.senders.senders.get(sender.name)
        return current if current is not None and current.username == sender.username \
            else sender

    def __repr__(self) -> str:
        s = self.stats
        return (f"<Worker lanes={','.join(self.lanes)} senders={len(self.senders)} "
                f"received={s.received} "
                f"settled={s.settled} batches={s.submitted_batches} reconnects={s.reconnects}>")

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; reconnect whenever the broker connection drops."""
        timeout = aiohttp.ClientTimeout(total=self.settings.ics_timeout_s)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http, \
                self.links, self.messages, self.rates.store, self._following_senders(stop), \
                beating(self.settings, self.lanes, self.ready):
            ics = IcsClient(http, str(self.settings.ics_url), self.settings.ics_timeout_s)
            self._submitter = Submitter(self.settings, ics, self.outcomes, self.policy)
            broker = await connect_with_backoff(
                self._open_broker, broker=self.settings.broker_url_redacted,
                retry_s=self.settings.connect_retry_s)
            while True:
                try:
                    await _Session(self, broker, self._submitter).serve(stop)
                except ConnectionLost as exc:
                    log.warning("broker connection lost; reconnecting", error=str(exc))
                finally:
                    await broker.close()
                if stop.is_set():
                    return
                self.ready.clear()
                fresh = await connect_with_backoff(
                    self._open_broker, broker=self.settings.broker_url_redacted, stop=stop)
                if fresh is None:
                    return
                broker = fresh
                self.stats.reconnects += 1

    def next_claim_token(self) -> str:
        """A token naming one batch's claim, unique across the fleet."""
        return f"{self._claim_prefix}:{next(self._claims):x}"

    @contextlib.asynccontextmanager
    async def _following_senders(self, stop: asyncio.Event) -> AsyncIterator[None]:
        """Keep the senders current (added, edited, removed, a new default, rotated tokens)
        for as long as the worker runs."""
        done = asyncio.Event()
        task = asyncio.create_task(self.live.run(done), name="senders reload")
        try:
            yield
        finally:
            done.set()
            await task

    async def _open_broker(self) -> Broker:
        return await self._broker_factory(self.settings)


class _Session:
    """Everything that lives as long as one broker connection."""

    def __init__(self, worker: Worker, broker: Broker, submitter: Submitter) -> None:
        self.worker = worker
        self.broker = broker
        self.submitter = submitter
        settings = worker.settings
        self.topology = settings.topology
        self.tracker = AckTracker(broker)
        self.settler = Settler(broker, self.tracker, later=self._later)
        self.lane_of_queue = {self.topology.send_queue(lane): lane for lane in Lane}
        self.jobs = JobFactory(self.topology, worker.live, worker.signer, worker.outcomes,
                               max_attempts=worker.policy.max_attempts,
                               link_secret=settings.callback_secret.get_secret_value().encode(),
                               link_base_url=str(settings.public_url))
        self.immediate: list[Settle] = []
        self.immediate_scheduled = False
        self.refusals: list[Refusal] = []
        self.tasks: set[asyncio.Task[None]] = set()
        # In a process that also serves the service lane, a promotional backlog gets a
        # smaller share (prefetch and batches in flight), so service messages are not stuck
        # behind it in the event loop; a promotional-only worker gives it everything. The
        # service lane is eager: no linger while it has a free slot (latency first).
        shared = Lane.SERVICE in worker.lanes
        self.batcher: Batcher[Job] = Batcher(
            self._send_batch, self._spawn, batch_max=settings.batch_max,
            linger_s=settings.linger_ms / 1000, eager=(Lane.SERVICE,),
            slots={Lane.SERVICE: settings.batches_in_flight,
                   Lane.PROMOTIONAL: (max(1, settings.batches_in_flight // 2) if shared
                                      else settings.batches_in_flight)})
        self.prefetch = {Lane.SERVICE: settings.prefetch,
                         Lane.PROMOTIONAL: (max(1, min(settings.prefetch, settings.batch_max))
                                            if shared else settings.prefetch)}
        self.consumers: dict[Lane, Consumer] = {}
        self.consumed = {self.topology.send_queue(lane): CONSUMED.labels(lane.value)
                         for lane in Lane}

    def __repr__(self) -> str:
        lanes = ",".join(lane.value for lane in self.consumers) or "none"
        return (f"<_Session consuming={lanes} {self.batcher!r} tasks={len(self.tasks)} "
                f"settling={len(self.immediate)} unacked={len(self.tracker)}>")

    async def serve(self, stop: asyncio.Event) -> None:
        await self.broker.declare(self.topology)
        lanes = self.worker.lanes
        if Lane.SERVICE in lanes:
            await self._start(Lane.SERVICE)
        window_task = asyncio.create_task(self._watch_window() if Lane.PROMOTIONAL in lanes
                                          else asyncio.Event().wait())
        sweeper = Sweeper(self.worker.messages, self.broker, self.topology,
                          interval_s=sweep_interval_s(self.worker.settings.receipt_deadline_s))
        sweep_task = asyncio.create_task(sweeper.run())
        self.worker.ready.set()
        log.info("worker consuming", queues=[self.topology.send_queue(lane) for lane in lanes])
        stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        closed: asyncio.Future[object] = asyncio.ensure_future(self._until_closed())
        try:
            await asyncio.wait([stopping, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            closed.cancel()
            for task in (window_task, sweep_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.broker.closed.done():
            self._abandon()
            self.broker.closed.result()  # raises ConnectionLost if it was not our close
            return
        await self._drain()

    async def _until_closed(self) -> None:
        with contextlib.suppress(ConnectionLost):
            await asyncio.shield(self.broker.closed)

    # -- consumers and the promotional window ------------------------------------------
    async def _start(self, lane: Lane) -> None:
        if lane not in self.consumers:
            prefetch = self.worker.hold.lane_prefetch(lane, self.worker.senders.senders.values(),
                                                      self.prefetch[lane])
            if prefetch < self.prefetch[lane]:
                log.info("prefetch capped by what the lane's senders send before the consumer "
                         "timeout", lane=lane.value, prefetch=prefetch,
                         configured=self.prefetch[lane])
            self.consumers[lane] = await self.broker.consume(
                self.topology.send_queue(lane), prefetch, self._on_delivery)

    async def _stop(self, lane: Lane) -> None:
        consumer = self.consumers.pop(lane, None)
        if consumer is not None:
            await consumer.cancel()

    async def _watch_window(self) -> None:
        window = self.worker.window
        while True:
            now = self.worker.clock()
            if window.is_open(now):
                await self._start(Lane.PROMOTIONAL)
            elif Lane.PROMOTIONAL in self.consumers:
                log.info("promotional window closed; promotional messages wait")
                await self._stop(Lane.PROMOTIONAL)
            await asyncio.sleep(min(window.seconds_until_change(now), _WINDOW_POLL_S))

    # -- per delivery (synchronous, cheap) -----------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        self.tracker.track(delivery)
        self.worker.stats.received += 1
        self.consumed[delivery.queue].inc()
        now = self.worker.clock()
        try:
            decision = self.jobs.decide(delivery, now)
        except Exception as exc:  # a bug must not take the connection (and its batches) down
            log.exception("could not handle a send request; dead-lettering it")
            self._settle_soon(Settle(delivery, [self.worker.outcomes.dead_copy(
                delivery, "worker_error", f"{type(exc).__name__}: {exc}")]))
            return
        if isinstance(decision, Settle):
            self._settle_soon(decision)
            return
        if isinstance(decision, Refusal):
            self.refusals.append(decision)
            if not self.immediate_scheduled:
                self.immediate_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_immediate)
            return
        lane = decision.sender.lane
        if lane is Lane.PROMOTIONAL and not self.worker.window.is_open(now):
            self._settle_soon(Settle(delivery, [], requeue=True))
            return
        held = self.batcher.held(decision.sender.name)
        if held >= self.worker.hold.per_sender(decision.sender,
                                               self.worker.rates.workers(decision.sender)):
            self._park_behind(decision, held)
            return
        self.batcher.add(decision)

    def _park_behind(self, job: Job, held: int) -> None:
        """The sender already holds what it sends in a safe share of the consumer timeout:
        this delivery goes back through a delay queue (no attempt, no park spent) instead of
        being held past the broker's consumer timeout."""
        sender = job.sender
        delay_s = self.worker.hold.park_s(sender, held, self.worker.rates.workers(sender))
        PARKED_BEHIND.note((("sender", sender.name),), held=held,
                           rate_per_s=sender.rate_per_s)
        self._settle_soon(Settle(job.delivery, [self.worker.outcomes.retry_copy(
            job.delivery, sender.lane, delay_s, attempt=job.attempt,
            reason=f"sender {sender.name} holds {held} messages, what it sends before the "
                   "consumer timeout", parked=job.parked)]))

    def _later(self, delivery: Delivery) -> Outgoing:
        """The delivery again in a while, same attempt: its events were refused."""
        lane = self.lane_of_queue.get(delivery.queue, Lane.SERVICE)
        attempt = delivery.headers.get(HEADER_ATTEMPT)
        return self.worker.outcomes.retry_copy(
            delivery, lane, _REPUBLISH_DELAY_S,
            attempt=attempt if type(attempt) is int else 1, reason="events refused")

    def _settle_soon(self, settle: Settle) -> None:
        self.immediate.append(settle)
        if not self.immediate_scheduled:
            self.immediate_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_immediate)

    def _flush_immediate(self) -> None:
        self.immediate_scheduled = False
        if self.refusals:
            refusals, self.refusals = self.refusals, []
            self._spawn(self._refuse(refusals))
        batch, self.immediate = self.immediate, []
        requeue = [s.delivery for s in batch if s.requeue]
        if requeue:
            self.settler.requeue(requeue)
            count_outcomes(self.topology, "", [], requeued=len(requeue))
        items = [(s.delivery, s.messages) for s in batch if not s.requeue]
        if items:
            self._spawn(self._settle(items))

    # -- batches (gathered per sender by the batcher) -----------------------------------
    async def _send_batch(self, sender: Sender, jobs: list[Job]) -> None:
        """Submit a due batch (the batcher holds a slot of the sender's lane)."""
        try:
            await self._submit(sender, jobs)
        except (asyncio.CancelledError, ConnectionLost):
            raise
        except Exception as exc:  # a bug: settle rather than hold deliveries forever
            log.exception("batch failed unexpectedly; dead-lettering it",
                          sender=sender.name, messages=len(jobs))
            error = f"{type(exc).__name__}: {exc}"
            await self._settle([(job.delivery, [self.worker.outcomes.dead_copy(
                job.delivery, "worker_error", error)]) for job in jobs], sender.name)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task crashed", error=repr(task.exception()))

    async def _submit(self, sender: Sender, jobs: list[Job]) -> None:
        """One ICS request for the claimed ``jobs`` (the caller holds a slot of the lane)."""
        worker = self.worker
        in_flight = IN_FLIGHT.labels(sender.lane.value)
        in_flight.inc()
        claimed: list[Job] = []
        calling = False
        try:
            token = worker.live.token(worker.credentials_of(sender))
            paused = 0.0
            if token is not None:
                jobs = self._within_rate(sender, jobs)
                grant = await self._take_rate(sender, jobs)
                if grant is None:  # the rate store cannot answer: parked, nothing claimed
                    return
                paused = grant.refused_s
            if paused > 0 or token is None:  # no usable credentials: the messages wait
                reason = ("sender paused: ICS refused its credentials" if token is not None
                          else f"sender cannot send: {worker.live.unusable(sender.name)}")
                jobs = claimed = await self._claim(sender, jobs)
                await self._conclude(self.submitter.hold(
                    jobs, paused or worker.settings.sender_pause_s, reason, worker.clock()),
                    sender.name)
                return
            jobs = claimed = await self._claim(sender, jobs)
            if not jobs:
                return
            jobs = claimed = await self._store_links(sender, jobs)
            if not jobs:
                return
            jobs = claimed = await self._mark_calling(sender, jobs)
            if not jobs:
                return
            calling = True
            result = await self.submitter.call(sender, jobs, token)
        except asyncio.CancelledError:
            if claimed:
                await asyncio.shield(self._give_up(sender, claimed, sent=calling))
            raise
        finally:
            in_flight.dec()
        worker.stats.ics_requests += 1
        worker.stats.submitted_batches += 1
        ICS_REQUESTS.labels(sender.name, str(result.status or "error")).inc()
        ICS_DURATION.labels(sender.name).observe(result.latency_s)
        BATCH_SIZE.observe(len(jobs))
        if not result.ok:
            log.warning("ICS batch not accepted", sender=sender.name, status=result.status,
                        reason=result.reason, messages=len(jobs))
        if result.ok or result.results:
            self.submitter.accepted(sender)
        verdicts = self.submitter.interpret(sender, jobs, result, worker.clock())
        await self._share_pause(sender, result.retry_after_s or 0.0,
                                self.submitter.state(sender).take_pause())
        if verdicts.uncertain_count:
            log.warning("ICS may have accepted messages it did not confirm; they are not "
                        "sent again and wait for their receipts", sender=sender.name,
                        messages=verdicts.uncertain_count, reason=result.reason or None)
        if verdicts.resends:
            log.warning("ICS may have accepted messages it did not confirm; sending them again "
                        "(the sender opted in: resend_uncertain)", sender=sender.name,
                        messages=verdicts.resends)
        await self._conclude(verdicts, sender.name)

    def _within_rate(self, sender: Sender, jobs: list[Job]) -> list[Job]:
        """The part of the batch one request may carry (a second of the sender's rate at
        most); the rest goes back to the batcher, due at once."""
        cap = SenderRates.batch_cap(sender)
        if len(jobs) <= cap:
            return jobs
        for job in jobs[cap:]:
            self.batcher.add(job)
        self.batcher.flush(sender.name)
        return jobs[:cap]

    async def _take_rate(self, sender: Sender, jobs: list[Job]) -> Grant | None:
        """Wait for the batch's moment on the sender's fleet-wide rate (one round trip);
        a grant that is not ``granted`` says how long ICS's refusal of the sender's
        credentials still pauses it. None: the rate store cannot answer and the messages
        were parked (nothing goes out past an unknown rate or pause)."""
        try:
            grant = await self.worker.rates.acquire(sender, len(jobs))
        except RateStoreError as exc:
            log.warning("rate store unavailable; messages wait (nothing is sent past the "
                        "sender's rate)", error=str(exc), messages=len(jobs))
            await self._settle(self.submitter.park(jobs, _STORE_WAIT_S, f"rate store: {exc}",
                                                   self.worker.clock()), sender.name)
            return None
        return grant

    async def _share_pause(self, sender: Sender, throttled_s: float, refused_s: float) -> None:
        """ICS throttled the sender or refused its credentials: every worker pauses it."""
        if throttled_s <= 0 and refused_s <= 0:
            return
        try:
            await self.worker.rates.pause(sender, throttled_s=throttled_s, refused_s=refused_s)
        except RateStoreError as exc:
            log.warning("rate store unavailable; the sender's pause is not shared with the "
                        "other workers", sender=sender.name, error=str(exc))

    async def _claim(self, sender: Sender, jobs: list[Job]) -> list[Job]:
        """Claim the batch in one round trip; settle at once what must not be sent."""
        token = self.worker.next_claim_token()
        claims = [job.claim(token) for job in jobs]
        now = self.worker.clock()
        try:
            results = await self.worker.messages.claim(
                claims, token=token, lease_s=self.worker.settings.claim_lease_s)
        except MessageStoreError as exc:
            log.warning("message store unavailable; messages wait (nothing is sent unclaimed)",
                        error=str(exc), messages=len(jobs))
            await self._settle(self.submitter.park(jobs, _STORE_WAIT_S, f"message store: {exc}",
                                                   now), sender.name)
            return []
        send, items = self.submitter.triage(jobs, results, now)
        if items:
            log.info("messages not sent again", sender=sender.name, messages=len(items))
            await self._settle(items, sender.name)
        expired = [job for job in send if job.request.expired(now)]
        if expired:
            await self._conclude(self.submitter.expire(expired, now), sender.name)
            send = [job for job in send if not job.request.expired(now)]
        return send

    async def _mark_calling(self, sender: Sender, jobs: list[Job]) -> list[Job]:
        """Just before the ICS request: ``sending -> uncertain`` for the messages whose
        claim this batch still holds (one round trip). From now on ICS may have them, so
        they are never claimed again; only the answer moves them on. A message whose lease
        another batch took (this one stalled past it) is not sent by this one."""
        marks = [Transition(job.request.message_id, State.UNCERTAIN, token=job.token)
                 for job in jobs]
        try:
            applied = await self.worker.messages.apply(marks)
        except MessageStoreError as exc:
            # Unknown whether the marks were written: send nothing. The messages come back
            # and are claimed again once the lease ends (or wait, if a mark was written).
            log.warning("message store unavailable before the ICS request; messages wait "
                        "(nothing is sent unmarked)", error=str(exc), messages=len(jobs))
            await self._settle(self.submitter.park(jobs, self.worker.settings.claim_lease_s,
                                                   f"message store: {exc}",
                                                   self.worker.clock()), sender.name)
            return []
        send = [job for job, a in zip(jobs, applied, strict=True)
                if a.result is TransitionResult.APPLIED]
        if len(send) < len(jobs):
            log.warning("another batch took over these messages' claims; not sending them",
                        sender=sender.name, messages=len(jobs) - len(send))
            taken = {id(job) for job in send}
            await self._settle([(job.delivery, []) for job in jobs if id(job) not in taken],
                               sender.name)
        return send

    async def _refuse(self, refusals: list[Refusal]) -> None:
        """Messages refused before any batch end ``rejected`` only once their message_id is
        claimed and the refusal recorded (two round trips for all those of a loop turn);
        without the store they wait, as batches do."""
        worker = self.worker
        now = worker.clock()
        lease_s = worker.settings.claim_lease_s
        try:
            results = await worker.messages.claim([r.claim() for r in refusals],
                                                  token=worker.next_claim_token(),
                                                  lease_s=lease_s)
            verdicts = self.submitter.refuse(refusals, results, now)
            await worker.messages.apply(verdicts.marks)
        except MessageStoreError as exc:
            # A claim without its refusal recorded is taken again once its lease ends.
            log.warning("message store unavailable; refused messages wait to be recorded",
                        error=str(exc), messages=len(refusals))
            await self._settle([(r.delivery, [worker.outcomes.retry_copy(
                r.delivery, self.lane_of_queue.get(r.delivery.queue, Lane.SERVICE), lease_s,
                attempt=r.attempt, reason=f"message store: {exc}")]) for r in refusals])
            return
        await self._settle(verdicts.items)

    async def _give_up(self, sender: Sender, jobs: list[Job], *, sent: bool) -> None:
        """The batch is abandoned (stop, lost connection). Claims of messages never sent
        are released; a request that may have reached ICS leaves them uncertain: they are
        not sent again and wait for their receipts."""
        if sent:  # already uncertain (marked before the request): nothing to record
            log.warning("gave up waiting for ICS; these messages are uncertain and will not "
                        "be sent again", sender=sender.name, messages=len(jobs))
            return
        try:
            async with asyncio.timeout(_STORE_WAIT_S):
                await self.worker.messages.apply(
                    [Transition(job.request.message_id, State.PENDING, token=job.token)
                     for job in jobs])
        except (MessageStoreError, TimeoutError) as exc:
            log.error("could not record abandoned messages", error=str(exc), messages=len(jobs))

    async def _conclude(self, verdicts: Verdicts, sender: str) -> None:
        """Record the messages' new states (one round trip), then publish and ack: a
        publish that fails after this is redone from the record, never by resending."""
        try:
            await self.worker.messages.apply(verdicts.marks)
        except MessageStoreError as exc:
            log.error("message states not recorded; a redelivery of these messages will "
                      "wait for their receipts", error=str(exc), messages=len(verdicts.marks))
        await self._settle(verdicts.items, sender)

    async def _store_links(self, sender: Sender, jobs: list[Job]) -> list[Job]:
        """Store the short links of the batch; without the store, those messages wait
        (a retry, their claims released) rather than go out with links that lead nowhere."""
        linked = [job for job in jobs if job.links]
        if not linked:
            return jobs
        links = [ShortLink(code=code, url=url, message_id=job.request.message_id,
                           campaign_id=job.request.campaign_id, sender=sender.name,
                           metadata=job.request.metadata)
                 for job in linked for code, url in job.links.items()]
        try:
            await self.worker.links.put_many(links)
        except LinkStoreError as exc:
            log.warning("link store unavailable; tracked messages will be retried",
                        error=str(exc), messages=len(linked))
            await self._conclude(self.submitter.retry(linked, f"link store: {exc}",
                                                      self.worker.clock()), sender.name)
            return [job for job in jobs if not job.links]
        return jobs

    async def _settle(self, items: BatchOutcome, sender: str = "") -> None:
        if await self.settler.settle(items):
            self.worker.stats.settled += len(items)
            count_outcomes(self.topology, sender, [messages for _, messages in items])

    # -- endings ------------------------------------------------------------------------
    def _abandon(self) -> None:
        """The connection is gone: drop everything; the broker requeued it all."""
        self.batcher.clear()
        for task in self.tasks:
            task.cancel()
        self.immediate.clear()
        self.refusals.clear()

    async def _drain(self) -> None:
        """Graceful stop: no new deliveries, submit what is batched, wait for in-flight."""
        for lane in list(self.consumers):
            with contextlib.suppress(ConnectionLost):
                await self._stop(lane)
        self.batcher.flush_all()
        if self.immediate or self.refusals:
            self._flush_immediate()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
        log.info("worker drained", settled=self.worker.stats.settled)
