"""Dead letters (queue ``sms.dead``): read them, choose some, replay them, purge them.

The logic behind ``ics-sms dead-letters`` and the operator console, one implementation:
:func:`collect`, :func:`replay` and :func:`purge` each make one pass over the queue
(:func:`scan`) and handle the dead letters a :class:`Selection` chooses.

Reading never loses a dead letter. A pass consumes ``sms.dead`` with manual acks and
puts every dead letter it only looked at back at the end of the queue as an exact copy
(same body, headers and message id) that the broker confirmed *before* the original is
acked. No dead letter is requeued with a nack, so redelivery counts do not add up: a copy
starts at zero, and at most the copies the broker offers at the end of a pass go back
once (see :func:`scan`); a broker whose quorum queues have a delivery limit (RabbitMQ 4
sets 20 by default) never drops one because an operator listed it often. A pass handles
the dead letters the queue held when it started, each once (the order of the copies the
broker offers back at the end of a pass may change).
(A crash between the confirmed copies and the acks leaves dead letters twice: replay
treats the copies as one.)

Replay is idempotent by ``message_id``: it reopens the message's record in the message
store (:meth:`~ics_sms.stores.messages.MessageStore.reopen`) only if ICS certainly never
got the message, publishes the request again as a new publish (fresh attempt count, a
``x-ics-replay`` header, ``metadata.ics_replay`` = the replay number), and removes the
dead letter only once the broker confirmed the replay. Dead letters hold phone numbers
and texts: they are shown to the operator who asks, never logged (lists mask the number:
:func:`mask`).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from ics_sms.broker.base import Broker, BrokerError, Consumer, Delivery, Outgoing
from ics_sms.broker.codec import send_message
from ics_sms.broker.connect import open_broker
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_PARKED,
    HEADER_PUBLISH_ID,
    HEADER_REASON,
    HEADER_REFUSED_SINCE,
    Topology,
)
from ics_sms.stores.messages import (
    InMemoryMessageStore,
    MessageRecord,
    MessageStore,
    MessageStoreError,
    Reopen,
    ReopenResult,
    fingerprint,
    open_message_store,
)
from ics_sms.workers.outcomes import HEADER_DEAD_AT, HEADER_SOURCE_QUEUE

__all__ = [
    "DROP",
    "HEADER_REPLAY",
    "KEEP",
    "REPLAY_KEY",
    "Action",
    "DeadLetter",
    "DeadLetterError",
    "Decide",
    "ReplayReport",
    "Replayed",
    "Scanned",
    "Selection",
    "Skipped",
    "age_text",
    "collect",
    "counts_by_reason",
    "mask",
    "parse_age",
    "purge",
    "replay",
    "scan",
]

REPLAY_KEY = "ics_replay"
"""The ``metadata`` key a replay sets to its number (1 for the first replay of a message):
every event of the replayed message carries it (workers and the receiver echo metadata),
so analytics tells the replay's events, and its final status, from the first life's."""
HEADER_REPLAY = "x-ics-replay"
"""The replay number on the replayed send request (for people reading the queues)."""

_CHUNK = 200
"""Dead letters decided and published (confirmed) at a time."""
_WINDOW = 5000
"""Dead letters held unacked at most (the prefetch of one reading consumer)."""
_IDLE_S = 5.0
"""A pass ends early when the queue delivers nothing for this long (someone else took
the dead letters it expected)."""
_POLL_S = 0.05
"""How often the end of a pass looks whether the copies it held are back."""
_UNREPLAYABLE = {
    "duplicate": "a duplicate: its message_id belongs to another message",
    "invalid_message": "its body is not a valid send request (it would be refused again)",
}
_DROPPED_HEADERS = frozenset({HEADER_ATTEMPT, HEADER_PARKED, HEADER_REFUSED_SINCE,
                              HEADER_REASON, HEADER_ERROR, HEADER_SOURCE_QUEUE,
                              HEADER_DEAD_AT, HEADER_PUBLISH_ID, HEADER_REPLAY,
                              "x-delivery-count"})
_T = TypeVar("_T")
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class DeadLetterError(Exception):
    """The broker or the message store failed, or replay has no message store: a one-line
    message for the operator (no secret, no phone number); what a pass did not handle yet
    stays in the queue."""


# -- reading a dead letter ---------------------------------------------------------------------
@dataclass(slots=True, repr=False)
class DeadLetter:
    """What a dead letter says, read from its delivery (never logged: it holds the number
    and the text; its ``repr`` shows neither)."""

    delivery: Delivery
    message_id: str
    reason: str
    error: str
    source_queue: str
    dead_at: float | None
    request: SendRequest | None
    problem: str
    """Why the body is not a valid send request ("" when it is)."""
    publish_id: str | None

    @classmethod
    def read(cls, delivery: Delivery) -> DeadLetter:
        headers = delivery.headers
        request, problem = None, ""
        try:
            request = SendRequest.model_validate_json(delivery.body)
        except ValidationError as exc:
            problem = "; ".join(describe(exc))
        message_id = (request.message_id if request is not None
                      else delivery.message_id or _salvaged_id(delivery.body))
        death = _first_death(headers)
        reason = _text(headers.get(HEADER_REASON)) or (
            f"broker:{_text(death.get('reason'))}" if death else "unknown")
        source = _text(headers.get(HEADER_SOURCE_QUEUE)) or _text(
            headers.get("x-first-death-queue")) or _text(death.get("queue"))
        dead_at: float | None = None
        stamp = headers.get(HEADER_DEAD_AT)
        if type(stamp) is int or type(stamp) is float:
            dead_at = float(stamp)
        elif isinstance(death.get("time"), datetime):
            when: datetime = death["time"]
            dead_at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        publish = _text(headers.get(HEADER_PUBLISH_ID))[:64] or None
        return cls(delivery, message_id or "?", reason, _text(headers.get(HEADER_ERROR)),
                   source, dead_at, request, problem, publish)

    @property
    def sender(self) -> str:
        """The sender the request names ("" for the default sender)."""
        return self.request.sender or "" if self.request is not None else ""

    @property
    def campaign(self) -> str:
        return self.request.campaign_id if self.request is not None else ""

    @property
    def to(self) -> str:
        """The phone number, in full ("" when the body is not a valid send request)."""
        return self.request.to if self.request is not None else ""

    @property
    def text(self) -> str:
        """The text, in full ("" when the body is not a valid send request)."""
        return self.request.text if self.request is not None else ""

    def __repr__(self) -> str:
        return f"<DeadLetter {self.message_id} reason={self.reason}>"

    @property
    def replays(self) -> int:
        """How often this message was replayed before (its ``metadata.ics_replay``)."""
        if self.request is None:
            return 0
        value = self.request.metadata.get(REPLAY_KEY)
        return value if type(value) is int and value > 0 else 0

    def age_s(self, now: float) -> float | None:
        return None if self.dead_at is None else max(now - self.dead_at, 0.0)

    def summary(self, now: float) -> dict[str, Any]:
        """The listing's fields (the number masked, no text)."""
        return {"message_id": self.message_id, "reason": self.reason,
                "age_s": _round(self.age_s(now)), "sender": self.sender or None,
                "campaign_id": self.campaign or None,
                "to": mask(self.request.to) if self.request is not None else None,
                "replays": self.replays}

    def detail(self, now: float) -> dict[str, Any]:
        """Everything, for ``show`` (the operator asked to see it)."""
        body: Any
        try:
            body = orjson.loads(self.delivery.body)
        except orjson.JSONDecodeError:
            body = self.delivery.body.decode("utf-8", "replace")
        return {**self.summary(now), "to": self.request.to if self.request else None,
                "error": self.error or None, "source_queue": self.source_queue or None,
                "dead_at": _iso(self.dead_at), "publish_id": self.publish_id,
                "invalid": self.problem or None,
                "headers": {k: _plain(v) for k, v in sorted(self.delivery.headers.items())},
                "body": body}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        return deaths[-1]
    return {}


def _salvaged_id(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    value = data.get("message_id") if isinstance(data, dict) else None
    return value[:64] if isinstance(value, str) else ""


def _plain(value: object) -> object:
    """A header value as JSON can show it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def mask(phone: str) -> str:
    """A phone number as lists show it: ``+4477*****123``."""
    return phone if len(phone) <= 8 else f"{phone[:5]}{'*' * (len(phone) - 8)}{phone[-3:]}"


def _round(value: float | None) -> int | None:
    return None if value is None else int(value)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def age_text(seconds: float | None) -> str:
    """An age for people: ``45s``, ``3m20s``, ``2h``, ``1d4h``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                          ("m", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}{rest}{small}" if rest else f"{s // size}{unit}"
    return f"{s}s"


def parse_age(value: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` as seconds; :class:`ValueError` with a
    one-line message else."""
    match = _AGE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an age (e.g. 90s, 30m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


# -- choosing dead letters ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command handles: all criteria given must hold (``Selection()``
    chooses every dead letter)."""

    ids: frozenset[str] = frozenset()
    """``message_id`` s."""
    reasons: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    """Sender names; ``(default)`` for the requests that name none."""
    campaigns: frozenset[str] = frozenset()
    older_than_s: float | None = None
    """Only dead letters at least this old (seconds; :func:`parse_age`)."""
    newer_than_s: float | None = None
    """Only dead letters at most this old."""

    @property
    def everything(self) -> bool:
        return not (self.ids or self.reasons or self.senders or self.campaigns
                    or self.older_than_s is not None or self.newer_than_s is not None)

    def matches(self, letter: DeadLetter, now: float) -> bool:
        if self.ids and letter.message_id not in self.ids:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.senders and (letter.sender or "(default)") not in self.senders:
            return False
        if self.campaigns and letter.campaign not in self.campaigns:
            return False
        age = letter.age_s(now)
        if self.older_than_s is not None and (age is None or age < self.older_than_s):
            return False
        return self.newer_than_s is None or (age is not None and age <= self.newer_than_s)


# -- one pass over the queue ---------------------------------------------------------------------
class _Keep:
    """Put the dead letter back (at the end of the queue, as a confirmed exact copy)."""


KEEP = _Keep()
DROP: tuple[Outgoing, ...] = ()
"""Remove the dead letter (ack it, publishing nothing)."""
Action = _Keep | tuple[Outgoing, ...]
"""Keep it, or publish these messages (confirmed) and then remove it."""
Decide = Callable[[list[DeadLetter]], Awaitable[list[Action]]]


@dataclass(frozen=True, slots=True)
class Scanned:
    read: int
    """Dead letters read (each handled once)."""
    held: int
    """Copies the broker offered at the end of a window, left unsettled: they return to
    the queue when the connection closes."""


async def scan(broker: Broker, topology: Topology, decide: Decide) -> Scanned:
    """Read the dead letters the queue holds now, in order: ``decide`` says per dead letter
    whether to keep it or what to publish before removing it.

    The queue is read in windows of at most :data:`_WINDOW` dead letters, each by a
    consumer whose prefetch is exactly the window: the broker hands over the window's dead
    letters and nothing more until they are settled, and none is settled before the whole
    window was decided and every message it needs (copies of those kept, replays) was
    confirmed. Then the window is acked: the queue holds the same dead letters, minus those
    removed. (Copies the broker offers once the acks free the window are left unsettled
    and return to the queue when the connection closes: one redelivery, on a copy the next
    pass replaces with a fresh one; their order may change.)"""
    queue = topology.dead_queue
    remaining = await broker.queue_depth(queue)
    seen = held = 0
    while remaining > 0:
        window = min(remaining, _WINDOW)
        taken, offered = await _window(broker, topology, queue, window, decide)
        seen += taken
        held += offered
        remaining -= taken
        if taken < window:  # someone else took dead letters meanwhile
            break
    return Scanned(seen, held)


async def _window(broker: Broker, topology: Topology, queue: str, window: int,
                  decide: Decide) -> tuple[int, int]:
    inbox: asyncio.Queue[Delivery] = asyncio.Queue()
    consumer = await broker.consume(queue, window, inbox.put_nowait)
    taken: list[Delivery] = []
    try:
        while len(taken) < window:
            try:
                async with asyncio.timeout(_IDLE_S):
                    chunk = [await inbox.get()]
            except TimeoutError:
                break
            while not inbox.empty() and len(chunk) < _CHUNK and len(taken) + len(chunk) < window:
                chunk.append(inbox.get_nowait())
            letters = [DeadLetter.read(d) for d in chunk]
            actions = await decide(letters)
            outgoing: list[Outgoing] = []
            for letter, action in zip(letters, actions, strict=True):
                outgoing.extend([_copy(broker, topology, letter.delivery)]
                                if isinstance(action, _Keep) else action)
            await broker.publish(outgoing)
            taken.extend(chunk)
        # All confirmed (copies and replays are in the broker): ack while the consumer
        # still exists (a quorum queue does not take acks for a cancelled consumer), and
        # wait until the broker processed them before cancelling.
        for delivery in taken:
            broker.ack(delivery)
        await _acks_processed(consumer, window)
    finally:
        await consumer.cancel()
    # Copies the broker offered once the acks freed the window (all arrived before the
    # cancel's answer) are left unsettled: they go back to the head of the queue, in
    # order, when the connection closes.
    return len(taken), inbox.qsize()


async def _acks_processed(consumer: Consumer, prefetch: int) -> None:
    """Return once the broker processed the acks sent on ``consumer``'s channel.

    A quorum queue requeues what a closing channel holds unacked, and acks the broker has
    not processed yet when the connection closes are lost to that: the dead letters would
    come back beside their copies. A synchronous request on the same channel (basic.qos,
    changing nothing) is answered only after the frames before it, the acks, were handled.
    The in-process broker settles at once."""
    channel = getattr(consumer, "_channel", None)
    if channel is None or not getattr(channel, "is_open", False):
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(_frame: object) -> None:
        if not done.done():
            done.set_result(None)

    channel.basic_qos(prefetch_count=prefetch, callback=answered)
    async with asyncio.timeout(30):
        await done


def _copy(broker: Broker, topology: Topology, delivery: Delivery) -> Outgoing:
    """The dead letter again, to the dead queue only (the default exchange routes by queue
    name; the in-process broker has no default exchange: its dead exchange feeds only it)."""
    headers = {k: v for k, v in delivery.headers.items() if k != "x-delivery-count"}
    if isinstance(broker, MemoryBroker):
        return Outgoing(topology.dead_exchange, delivery.routing_key, delivery.body, headers,
                        delivery.message_id)
    return Outgoing("", topology.dead_queue, delivery.body, headers, delivery.message_id)


# -- replay --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Plan:
    index: int
    letter: DeadLetter
    message: Outgoing
    reopen: Reopen
    copies: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Replayed:
    """A dead letter replayed (published again, confirmed) and removed."""

    message_id: str
    reason: str
    replay: int
    """The replay number (``metadata.ics_replay`` of the replayed request)."""
    record: str
    """The state of the message's record before it was reopened ("none": no record)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A selected dead letter kept in the queue, and why (one line for the operator)."""

    message_id: str
    reason: str
    why: str


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, per selected dead letter, in queue order."""

    replayed: list[Replayed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {"replayed": [asdict(item) for item in self.replayed],
                "skipped": [asdict(item) for item in self.skipped]}

    def __repr__(self) -> str:
        return f"<ReplayReport replayed={len(self.replayed)} skipped={len(self.skipped)}>"


@dataclass(slots=True)
class _Replayer:
    """Decides, per chunk of dead letters, which to replay (see the module's docstring)."""

    topology: Topology
    store: MessageStore
    selection: Selection
    now: float
    report: ReplayReport = field(default_factory=ReplayReport)
    _done: set[tuple[str, str]] = field(default_factory=set)

    async def __call__(self, letters: list[DeadLetter]) -> list[Action]:
        actions: list[Action] = [KEEP] * len(letters)
        plans: dict[tuple[str, str], _Plan] = {}
        for index, letter in enumerate(letters):
            if not self.selection.matches(letter, self.now):
                continue
            if letter.request is None or letter.reason in _UNREPLAYABLE:
                self._skip(letter, _UNREPLAYABLE.get(letter.reason, _UNREPLAYABLE[
                    "invalid_message"]))
                continue
            origin = fingerprint(letter.request, letter.publish_id)
            key = (letter.request.message_id, origin)
            if key in self._done:  # a copy of a dead letter this pass replayed
                actions[index] = DROP
                continue
            if key in plans:
                plans[key].copies.append(index)
                continue
            planned = self._plan(index, letter, origin)
            if planned is not None:
                plans[key] = planned
        results = await self.store.reopen([plan.reopen for plan in plans.values()])
        for (key, plan), (result, record) in zip(plans.items(), results, strict=True):
            if result in (ReopenResult.REOPENED, ReopenResult.MISSING):
                actions[plan.index] = (plan.message,)
                for copy in plan.copies:
                    actions[copy] = DROP
                self._done.add(key)
                self.report.replayed.append(Replayed(
                    plan.letter.message_id, plan.letter.reason, plan.letter.replays + 1,
                    "none" if record is None else record.state.value))
            else:
                self._skip(plan.letter, _why(result, record))
        return actions

    def _plan(self, index: int, letter: DeadLetter, origin: str) -> _Plan | None:
        assert letter.request is not None
        number = letter.replays + 1
        data = letter.request.model_dump(mode="json", exclude_none=True)
        data["metadata"] = {**letter.request.metadata, REPLAY_KEY: number}
        try:
            request = SendRequest.model_validate(data)
        except ValidationError as exc:
            self._skip(letter, "cannot add the replay mark to metadata: "
                       + "; ".join(describe(exc)))
            return None
        headers = {k: v for k, v in letter.delivery.headers.items()
                   if k not in _DROPPED_HEADERS and not k.startswith(
                       ("x-death", "x-first-death", "x-last-death"))}
        headers[HEADER_REPLAY] = number
        message = send_message(self.topology, request, self._lane(letter), headers)
        publish = _text((message.headers or {}).get(HEADER_PUBLISH_ID))
        reopen = Reopen(request.message_id, origin, fingerprint(request, publish))
        return _Plan(index, letter, message, reopen)

    def _lane(self, letter: DeadLetter) -> Lane:
        """The lane it was sent on (a worker moves it if its sender's lane changed since)."""
        for lane in Lane:
            if letter.source_queue == self.topology.send_queue(lane):
                return lane
        try:
            return Lane(letter.delivery.routing_key)
        except ValueError:
            return Lane.SERVICE

    def _skip(self, letter: DeadLetter, why: str) -> None:
        self.report.skipped.append(Skipped(letter.message_id, letter.reason, why))


def _why(result: ReopenResult, record: MessageRecord | None) -> str:
    state = record.state.value if record is not None else "none"
    if result is ReopenResult.SENT:
        mid = f", ICS mid {record.provider_message_id}" if record and \
            record.provider_message_id else ""
        return (f"ICS has or may have it (record {state}{mid}): never sent twice")
    if result is ReopenResult.ACTIVE:
        return f"the message is on its way (record {state}), e.g. an earlier replay"
    return "the message_id's record belongs to another publication (a duplicate or a " \
           "newer dead letter of it)"




# -- the operations -------------------------------------------------------------------------------
def _passes() -> asyncio.Lock:
    """One pass at a time per event loop: a pass holds the dead letters it reads, so a
    pass beside it (two console requests) would find the queue empty."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


async def _pass(settings: Settings, decide: Decide) -> None:
    """One :func:`scan` of the dead queue on a broker connection of its own; returns once
    the copies it held unsettled are back in the queue (the next pass, maybe a moment
    later from the console, must find every dead letter)."""
    async with _passes():
        await _pass_alone(settings, decide)


async def _pass_alone(settings: Settings, decide: Decide) -> None:
    queue = settings.topology.dead_queue

    async def read(broker: Broker) -> int:
        scanned = await scan(broker, settings.topology, decide)
        if scanned.held == 0 or isinstance(broker, MemoryBroker):  # it settles at once
            return 0
        return await broker.queue_depth(queue) + scanned.held

    floor = await _on_broker(settings, read)
    if floor:
        await _on_broker(settings, lambda broker: _back(broker, queue, floor))


async def _back(broker: Broker, queue: str, floor: int) -> None:
    """Wait until ``queue`` holds ``floor`` messages: a quorum queue returns what a closed
    connection held a little after the close. At most :data:`_IDLE_S` (someone else may
    have taken dead letters meanwhile)."""
    for _ in range(int(_IDLE_S / _POLL_S)):
        if await broker.queue_depth(queue) >= floor:
            return
        await asyncio.sleep(_POLL_S)


async def _on_broker(settings: Settings, work: Callable[[Broker], Awaitable[_T]]) -> _T:
    """``work`` on a broker connection of its own; broker failures as one line."""
    try:
        broker = await open_broker(settings, name="ics-sms dead-letters")
    except BrokerError as exc:
        raise DeadLetterError(str(exc)) from None
    try:
        return await work(broker)
    except BrokerError as exc:  # e.g. no dead-letter queue yet (``ics-sms topology``)
        raise DeadLetterError(f"the broker failed: {exc}; dead letters not yet handled stay "
                              f"in queue {settings.topology.dead_queue}") from None
    finally:
        await broker.close()


async def collect(settings: Settings, selection: Selection, *,
                  now: float | None = None) -> list[DeadLetter]:
    """The dead letters ``selection`` chooses, oldest first (by when they were dead-lettered,
    then by message_id: reading puts copies back, so the queue's own order shifts between
    passes); every dead letter stays in the queue. ``now`` (epoch seconds, default: the
    clock) is what ages are measured from."""
    moment = time.time() if now is None else now
    found: list[DeadLetter] = []

    async def keep_all(letters: list[DeadLetter]) -> list[Action]:
        found.extend(letter for letter in letters if selection.matches(letter, moment))
        return [KEEP] * len(letters)

    await _pass(settings, keep_all)
    return sorted(found, key=lambda letter: (letter.dead_at or 0.0, letter.message_id))


async def replay(settings: Settings, selection: Selection, *,
                 now: float | None = None) -> ReplayReport:
    """Send again, at most once, the dead letters ``selection`` chooses that ICS certainly
    never got (see the module's docstring); the others stay, with the reason why.

    :class:`Selection` () chooses every dead letter: ask the operator first. Needs the
    workers' message store (Redis): raises :class:`DeadLetterError` without it, and when the
    broker or the store fails (what was replayed until then is replayed; the rest stays)."""
    store = open_message_store(settings)
    if isinstance(store, InMemoryMessageStore):
        await store.close()
        raise DeadLetterError("ICS_SMS_REDIS_URL: replay needs the workers' message store "
                              "(Redis) to send each message at most once; memory:// has none")
    replayer = _Replayer(settings.topology, store, selection,
                         time.time() if now is None else now)
    try:
        await _pass(settings, replayer)
    except MessageStoreError as exc:
        raise DeadLetterError(f"message store: {exc}; nothing more was replayed") from None
    finally:
        await store.close()
    return replayer.report


async def purge(settings: Settings, selection: Selection, *,
                now: float | None = None) -> Counter[str]:
    """Remove for good the dead letters ``selection`` chooses; how many, by reason.
    :class:`Selection` () chooses every dead letter: ask the operator first."""
    moment = time.time() if now is None else now
    purged: Counter[str] = Counter()

    async def drop(letters: list[DeadLetter]) -> list[Action]:
        actions: list[Action] = []
        for letter in letters:
            if selection.matches(letter, moment):
                purged[letter.reason] += 1
                actions.append(DROP)
            else:
                actions.append(KEEP)
        return actions

    await _pass(settings, drop)
    return purged


def counts_by_reason(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """How many dead letters per reason, the most frequent first."""
    return dict(Counter(letter.reason for letter in letters).most_common())
