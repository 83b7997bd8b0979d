"""``ics-sms dead-letters``: see what ended in the dead-letter queue, replay it, purge it.

Reading never loses a dead letter. The commands consume ``sms.dead`` with manual acks and
put every dead letter they only looked at back at the end of the queue as an exact copy
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
and texts: they are shown to the operator who asks, never logged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ics_sms.broker.base import Broker, BrokerError, Consumer, Delivery, Outgoing
from ics_sms.broker.codec import send_message
from ics_sms.broker.connect import open_broker
from ics_sms.broker.memory import MemoryBroker
from ics_sms.cli.common import CliError, load_settings
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

__all__ = ["HEADER_REPLAY", "REPLAY_KEY", "dead_letters_group"]

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
_UNREPLAYABLE = {
    "duplicate": "a duplicate: its message_id belongs to another message",
    "invalid_message": "its body is not a valid send request (it would be refused again)",
}
_DROPPED_HEADERS = frozenset({HEADER_ATTEMPT, HEADER_PARKED, HEADER_REFUSED_SINCE,
                              HEADER_REASON, HEADER_ERROR, HEADER_SOURCE_QUEUE,
                              HEADER_DEAD_AT, HEADER_PUBLISH_ID, HEADER_REPLAY,
                              "x-delivery-count"})
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@click.group("dead-letters")
def dead_letters_group() -> None:
    """List, show, replay and purge the dead letters (queue sms.dead).

    Dead letters are send requests that ended without being sent (refused, failed before
    ICS took them, expired) or that no worker could handle. Replay sends again those ICS
    certainly never got, once; purge removes them.
    """


# -- reading a dead letter ---------------------------------------------------------------------
@dataclass(slots=True)
class DeadLetter:
    """What a dead letter says, read from its delivery (never logged: it holds the number
    and the text)."""

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
                "to": _mask(self.request.to) if self.request is not None else None,
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


def _mask(phone: str) -> str:
    return phone if len(phone) <= 8 else f"{phone[:5]}{'*' * (len(phone) - 8)}{phone[-3:]}"


def _round(value: float | None) -> int | None:
    return None if value is None else int(value)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                          ("m", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}{rest}{small}" if rest else f"{s // size}{unit}"
    return f"{s}s"


def parse_age(option: str, value: str | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` as seconds; a one-line error else."""
    if value is None:
        return None
    match = _AGE.match(value)
    if match is None:
        raise CliError(f"{option}: {value!r} is not an age (e.g. 90s, 30m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


# -- choosing dead letters ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command handles: all criteria given must hold."""

    ids: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    older_than_s: float | None = None
    newer_than_s: float | None = None

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


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--reason", "reasons", multiple=True,
                     help="Only dead letters with this reason (repeatable), e.g. "
                          "sender_unauthorized."),
        click.option("--sender", "senders", multiple=True,
                     help="Only requests naming this sender (repeatable; '(default)' for "
                          "those naming none)."),
        click.option("--campaign", "campaigns", multiple=True,
                     help="Only this campaign_id (repeatable)."),
        click.option("--older-than", help="Only dead letters older than this age "
                                          "(90s, 30m, 2h, 7d)."),
        click.option("--newer-than", help="Only dead letters at most this old."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(ids: Sequence[str], reasons: Sequence[str], senders: Sequence[str],
               campaigns: Sequence[str], older_than: str | None,
               newer_than: str | None) -> Selection:
    return Selection(frozenset(ids), frozenset(reasons), frozenset(senders),
                     frozenset(campaigns), parse_age("--older-than", older_than),
                     parse_age("--newer-than", newer_than))


# -- one pass over the queue ---------------------------------------------------------------------
class _Keep:
    """Put the dead letter back (at the end of the queue, as a confirmed exact copy)."""


KEEP = _Keep()
DROP: tuple[Outgoing, ...] = ()
"""Remove the dead letter (ack it, publishing nothing)."""
Action = _Keep | tuple[Outgoing, ...]
"""Keep it, or publish these messages (confirmed) and then remove it."""
Decide = Callable[[list[DeadLetter]], Awaitable[list[Action]]]


async def scan(broker: Broker, topology: Topology, decide: Decide) -> int:
    """Read the dead letters the queue holds now, in order: ``decide`` says per dead letter
    whether to keep it or what to publish before removing it. Returns how many it read.

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
    seen = 0
    while remaining > 0:
        window = min(remaining, _WINDOW)
        taken = await _window(broker, topology, queue, window, decide)
        seen += taken
        remaining -= taken
        if taken < window:  # someone else took dead letters meanwhile
            break
    return seen


async def _window(broker: Broker, topology: Topology, queue: str, window: int,
                  decide: Decide) -> int:
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
    # Copies the broker offered once the acks freed the window are left unsettled: they
    # go back to the head of the queue, in order, when the connection closes.
    return len(taken)


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


async def _run(settings: Settings, work: Callable[[Broker], Awaitable[None]]) -> None:
    try:
        broker = await open_broker(settings, name="ics-sms dead-letters")
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    try:
        await work(broker)
    except BrokerError as exc:  # e.g. no dead-letter queue yet (``ics-sms topology``)
        raise CliError(f"the broker failed: {exc}; dead letters not yet handled stay in "
                       f"queue {settings.topology.dead_queue}") from None
    finally:
        await broker.close()


async def _collect(settings: Settings, selection: Selection, now: float) -> list[DeadLetter]:
    found: list[DeadLetter] = []

    async def keep_all(letters: list[DeadLetter]) -> list[Action]:
        found.extend(letter for letter in letters if selection.matches(letter, now))
        return [KEEP] * len(letters)

    async def work(broker: Broker) -> None:
        await scan(broker, settings.topology, keep_all)

    await _run(settings, work)
    return found


def _json(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# -- list / show -------------------------------------------------------------------------------
@dead_letters_group.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="Show at most this many rows (the counts cover all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_dead_letters(reasons: tuple[str, ...], senders: tuple[str, ...],
                      campaigns: tuple[str, ...], older_than: str | None,
                      newer_than: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first, with counts by reason (numbers masked)."""
    settings = load_settings()
    selection = _selection((), reasons, senders, campaigns, older_than, newer_than)
    now = time.time()
    letters = asyncio.run(_collect(settings, selection, now))
    counts = Counter(letter.reason for letter in letters)
    if as_json:
        _json({"count": len(letters), "by_reason": dict(counts.most_common()),
               "dead_letters": [letter.summary(now) for letter in letters[:limit]]})
        return
    if not letters:
        click.echo("no dead letters" + ("" if selection.everything else " match"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MESSAGE_ID", "REASON", "AGE", "SENDER", "CAMPAIGN", "TO", "REPLAYS"):
        table.add_column(column)
    for letter in letters[:limit]:
        row = letter.summary(now)
        table.add_row(letter.message_id, letter.reason, _age_text(letter.age_s(now)),
                      letter.sender or "(default)", letter.campaign or "-", row["to"] or "-",
                      str(letter.replays or ""))
    console = Console(highlight=False, soft_wrap=True)
    console.print(table)
    if len(letters) > limit:
        click.echo(f"... {len(letters) - limit} more (raise --limit to see them)")
    by_reason = ", ".join(f"{reason}={n}" for reason, n in counts.most_common())
    click.echo(f"{len(letters)} dead letter(s): {by_reason}")


@dead_letters_group.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_dead_letter(message_id: str, as_json: bool) -> None:
    """Show the dead letters of MESSAGE_ID in full: number, text, headers, reason."""
    settings = load_settings()
    now = time.time()
    letters = asyncio.run(_collect(settings, Selection(ids=frozenset({message_id})), now))
    if not letters:
        raise CliError(f"no dead letter with message_id {message_id!r}")
    details = [letter.detail(now) for letter in letters]
    if as_json:
        _json(details)
        return
    for index, detail in enumerate(details):
        if index:
            click.echo("")
        for key in ("message_id", "reason", "error", "dead_at", "source_queue", "sender",
                    "campaign_id", "to", "replays", "publish_id", "invalid"):
            value = detail[key]
            if key == "dead_at" and value:
                value = f"{value} ({_age_text(detail['age_s'])} ago)"
            if value not in (None, ""):
                click.echo(f"{key:<13} {value}")
        click.echo(f"{'headers':<13} {orjson.dumps(detail['headers']).decode()}")
        click.echo(f"{'body':<13} {orjson.dumps(detail['body']).decode()}")


# -- replay --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Plan:
    index: int
    letter: DeadLetter
    message: Outgoing
    reopen: Reopen
    copies: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Replayer:
    """Decides, per chunk of dead letters, which to replay (see the module's docstring)."""

    topology: Topology
    store: MessageStore
    selection: Selection
    now: float
    replayed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
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
                self.replayed.append({"message_id": plan.letter.message_id,
                                      "reason": plan.letter.reason,
                                      "replay": plan.letter.replays + 1,
                                      "record": "none" if record is None
                                      else record.state.value})
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
        self.skipped.append({"message_id": letter.message_id, "reason": letter.reason,
                             "why": why})


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


@dead_letters_group.command("replay")
@click.argument("message_ids", nargs=-1)
@_filter_options
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def replay_dead_letters(message_ids: tuple[str, ...], reasons: tuple[str, ...],
                        senders: tuple[str, ...], campaigns: tuple[str, ...],
                        older_than: str | None, newer_than: str | None, everything: bool,
                        as_json: bool) -> None:
    """Send again the dead letters MESSAGE_IDS (or those the filters select) that ICS
    certainly never got: each at most once, however often this runs.

    The request goes back to its send queue as a new publish with a fresh attempt count;
    its events carry metadata.ics_replay (the replay number). A dead letter is removed only
    once the broker confirmed its replay; those not replayed stay, with the reason why.
    """
    settings = load_settings()
    selection = _selection(message_ids, reasons, senders, campaigns, older_than, newer_than)
    if selection.everything and not everything:
        raise CliError("name dead letters by message id or filter (--reason, --sender, "
                       "--campaign, --older-than, --newer-than), or pass --all")
    store = open_message_store(settings)
    if isinstance(store, InMemoryMessageStore):
        raise CliError("ICS_SMS_REDIS_URL: replay needs the workers' message store (Redis) "
                       "to send each message at most once; memory:// has none")
    replayer = Replayer(settings.topology, store, selection, time.time())

    async def work(broker: Broker) -> None:
        try:
            await scan(broker, settings.topology, replayer)
        finally:
            await store.close()

    try:
        asyncio.run(_run(settings, work))
    except MessageStoreError as exc:
        raise CliError(f"message store: {exc}; nothing more was replayed") from None
    if as_json:
        _json({"replayed": replayer.replayed, "skipped": replayer.skipped})
        return
    for item in replayer.replayed:
        click.echo(f"replayed  {item['message_id']}  ({item['reason']}; replay "
                   f"{item['replay']})")
    for item in replayer.skipped:
        click.echo(f"kept      {item['message_id']}  ({item['reason']}): {item['why']}")
    click.echo(f"{len(replayer.replayed)} replayed, {len(replayer.skipped)} kept")


# -- purge ---------------------------------------------------------------------------------------
@dead_letters_group.command("purge")
@click.argument("message_ids", nargs=-1)
@_filter_options
@click.option("--all", "everything", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def purge_dead_letters(message_ids: tuple[str, ...], reasons: tuple[str, ...],
                       senders: tuple[str, ...], campaigns: tuple[str, ...],
                       older_than: str | None, newer_than: str | None, everything: bool,
                       yes: bool, as_json: bool) -> None:
    """Remove the dead letters MESSAGE_IDS (or those the filters select) for good, after
    showing how many and asking (--yes skips the question)."""
    settings = load_settings()
    selection = _selection(message_ids, reasons, senders, campaigns, older_than, newer_than)
    if selection.everything and not everything:
        raise CliError("name dead letters by message id or filter (--reason, --sender, "
                       "--campaign, --older-than, --newer-than), or pass --all")
    now = time.time()
    if not yes:
        found = asyncio.run(_collect(settings, selection, now))
        if not found:
            click.echo("no dead letters match")
            return
        counts = Counter(letter.reason for letter in found)
        by_reason = ", ".join(f"{reason}={n}" for reason, n in counts.most_common())
        click.confirm(f"Purge {len(found)} dead letter(s) ({by_reason})? They cannot be "
                      "recovered", abort=True, err=True)
    purged: Counter[str] = Counter()

    async def drop(letters: list[DeadLetter]) -> list[Action]:
        actions: list[Action] = []
        for letter in letters:
            if selection.matches(letter, now):
                purged[letter.reason] += 1
                actions.append(DROP)
            else:
                actions.append(KEEP)
        return actions

    async def work(broker: Broker) -> None:
        await scan(broker, settings.topology, drop)

    asyncio.run(_run(settings, work))
    if as_json:
        _json({"purged": sum(purged.values()), "by_reason": dict(purged.most_common())})
        return
    by_reason = ", ".join(f"{reason}={n}" for reason, n in purged.most_common())
    click.echo(f"purged {sum(purged.values())} dead letter(s)"
               + (f": {by_reason}" if by_reason else ""))
