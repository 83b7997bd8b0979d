"""The independent witness: reads every event and dead letter and accounts for each message.

The :class:`Ledger` is a plain pika consumer in a thread of its own, connected straight to
RabbitMQ (never through a fault proxy): it plays the analytics consumer on ``sms.events``
and the operator on ``sms.dead``. Every event is validated against the published
:class:`~ics_sms.schemas.messages.ReceiptEvent` contract. :func:`account` turns what it saw into
the verdict of a scenario.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.exceptions import AMQPError
from pydantic import ValidationError

from ics_sms.schemas.messages import TERMINAL_STATUSES, ReceiptEvent, Status
from ics_sms.schemas.topology import HEADER_REASON, Topology
from ics_sms.workers.sweeper import NO_RECEIPT

__all__ = ["DeadLetter", "Ledger", "Verdict", "account"]

_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
_EXAMPLES = 5
DUPLICATE_PUBLISH = "duplicate"
"""``error_code`` of the ``rejected`` event that refuses a second publish of a message_id
(issue 13): the refusal of that publish, not a second final status of the message."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str | None
    reason: str | None
    error: str | None
    source_queue: str | None
    x_death: bool
    body_bytes: int


class Ledger(threading.Thread):
    """Consumes ``sms.events`` and ``sms.dead`` of one namespace and remembers everything."""

    def __init__(self, url: str, topology: Topology, *,
                 watch: Mapping[str, str] | None = None) -> None:
        """``watch`` names secrets (name -> value) that no event or dead letter may hold."""
        super().__init__(name="chaos-ledger", daemon=True)
        self._params = pika.URLParameters(url)
        self._params.client_properties = {"connection_name": "chaos ledger"}
        self._topology = topology
        self._stop_flag = threading.Event()
        self._ready = threading.Event()
        self._events_paused = threading.Event()
        self._lock = threading.Lock()
        self._watch = [(name, value.encode()) for name, value in (watch or {}).items() if value]
        # what was seen (guarded by _lock)
        self.events = 0
        self.by_status: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.duplicate_events = 0
        self.redelivered_duplicates = 0
        self.terminal: dict[str, dict[str, str]] = defaultdict(dict)
        self.no_receipt: set[str] = set()
        """Messages the sweeper ended (``expired``/``no_receipt``): no delivery to dead-letter."""
        self.touched: set[str] = set()
        self.message_ids: set[str] = set()
        self.event_senders: defaultdict[str, set[str | None]] = defaultdict(set)
        """The senders the events of each message named (its submission and its receipts)."""
        self.submissions: Counter[str] = Counter()
        self.submit_attempts: Counter[int] = Counter()
        self.terminal_before_submitted = 0
        self.duplicate_refusals: Counter[str] = Counter()
        self.invalid: list[str] = []
        self.dead: list[DeadLetter] = []
        self.secret_hits: list[str] = []
        self.reconnects = 0
        self.last_event_at = 0.0

    def __repr__(self) -> str:
        return (f"<Ledger events={self.events} terminal={len(self.terminal)} "
                f"dead={len(self.dead)} duplicates={self.duplicate_events}>")

    # -- the consumer thread -------------------------------------------------------------
    def start_and_wait(self, timeout_s: float = 30.0) -> Ledger:
        self.start()
        if not self._ready.wait(timeout_s):
            raise AssertionError("the ledger could not start consuming within "
                                 f"{timeout_s:g}s")
        return self

    def pause_events(self, paused: bool) -> None:
        """Stop (or resume) consuming ``sms.events``, as a stalled analytics consumer would;
        dead letters are still read."""
        if paused:
            self._events_paused.set()
        else:
            self._events_paused.clear()

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(30)

    def run(self) -> None:
        while not self._stop_flag.is_set():
            try:
                self._consume()
            except AMQPError:
                if self._stop_flag.is_set():
                    return
                with self._lock:
                    self.reconnects += 1
                time.sleep(0.5)  # the broker restarts (only in the rabbitmqctl scenario)

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self._params)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=2000)
            events: str | None = channel.basic_consume(self._topology.events_queue,
                                                       self._on_event)
            channel.basic_consume(self._topology.dead_queue, self._on_dead)
            self._ready.set()
            while not self._stop_flag.is_set():
                connection.process_data_events(time_limit=0.1)
                if self._events_paused.is_set() and events is not None:
                    channel.basic_cancel(events)
                    events = None
                elif not self._events_paused.is_set() and events is None:
                    events = channel.basic_consume(self._topology.events_queue, self._on_event)
        finally:
            if connection.is_open:
                connection.close()

    def _scan(self, where: str, data: bytes) -> None:
        for name, needle in self._watch:
            if needle in data:
                self.secret_hits.append(f"{name} appears in a {where}")

    def _on_event(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        try:
            event: ReceiptEvent | None = ReceiptEvent.model_validate_json(body)
        except ValidationError as exc:
            event = None
            problem = f"{body[:200]!r}: {exc.errors()[0]['msg']}"
        with self._lock:
            self.events += 1
            self.last_event_at = time.monotonic()
            if self._watch:
                self._scan("event", body)
            if event is None:
                self.invalid.append(problem)
            else:
                self._note(event, method.redelivered)
        channel.basic_ack(method.delivery_tag)

    def _note(self, event: ReceiptEvent, redelivered: bool) -> None:
        status = event.status.value
        self.message_ids.add(event.message_id)
        if event.event_id in self.seen:
            if redelivered:
                self.redelivered_duplicates += 1  # our own redelivery, not the product's
            else:
                self.duplicate_events += 1
            return
        self.seen.add(event.event_id)
        self.by_status[status] += 1
        self.event_senders[event.message_id].add(event.sender)
        if event.status is Status.REJECTED and event.error_code == DUPLICATE_PUBLISH:
            self.duplicate_refusals[event.message_id] += 1
        elif status in _TERMINAL:
            if event.message_id not in self.submissions and status in ("delivered", "failed"):
                self.terminal_before_submitted += 1  # the receipt overtook the worker's event
            self.terminal[event.message_id][event.event_id] = status
            self.touched.add(event.message_id)
            if event.status is Status.EXPIRED and event.error_code == NO_RECEIPT:
                self.no_receipt.add(event.message_id)
        elif event.status is Status.SUBMITTED:
            self.submissions[event.message_id] += 1
            self.submit_attempts[event.attempt or 0] += 1
            self.touched.add(event.message_id)

    def _on_dead(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        headers: Mapping[str, Any] = props.headers or {}

        def text(name: str) -> str | None:
            value = headers.get(name)
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            return None if value is None else str(value)

        letter = DeadLetter(props.message_id, text(HEADER_REASON), text("x-ics-error"),
                            text("x-ics-source-queue"), "x-death" in headers, len(body))
        with self._lock:
            self.dead.append(letter)
            if self._watch:
                self._scan("dead letter", body)
                self._scan("dead-letter headers", repr(headers).encode())
        channel.basic_ack(method.delivery_tag)

    # -- questions the scenarios ask -----------------------------------------------------
    def progress(self, ids: Collection[str]) -> int:
        """How many of ``ids`` were submitted or reached a final status."""
        with self._lock:
            return sum(1 for i in ids if i in self.touched)

    def finished(self, ids: Collection[str]) -> int:
        """How many of ``ids`` have a terminal event."""
        with self._lock:
            return sum(1 for i in ids if i in self.terminal)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"events": self.events, "by_status": dict(self.by_status),
                    "duplicate_events": self.duplicate_events, "dead_letters": len(self.dead),
                    "submitted_at_attempt": dict(sorted(self.submit_attempts.items())),
                    "receipt_before_submitted": self.terminal_before_submitted,
                    "terminal_messages": len(self.terminal),
                    "duplicate_publishes_refused": self.duplicate_refusals.total()}

    def snapshot_ids(self) -> set[str]:
        """Every message id any event named."""
        with self._lock:
            return set(self.message_ids)

    def senders_of(self, ids: Iterable[str]) -> dict[str, set[str | None]]:
        """The senders the events of each of ``ids`` named (empty: no event yet)."""
        with self._lock:
            return {i: set(self.event_senders.get(i, ())) for i in ids}

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self.dead)

    def idle_for(self, seconds: float) -> bool:
        """True when no event came in the last ``seconds``."""
        with self._lock:
            return time.monotonic() - self.last_event_at >= seconds

    def finals(self, ids: Iterable[str]) -> dict[str, int]:
        """How many final events (distinct event ids) each of ``ids`` has; refusals of a
        duplicate publish are not final events of the message."""
        with self._lock:
            return {i: len(self.terminal.get(i, ())) for i in ids}

    def terminal_of(self, message_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.terminal.get(message_id, {}))


@dataclass
class Verdict:
    """The accounting of one campaign; ``problems`` empty means every message is fine."""

    messages: int
    lost: list[str] = field(default_factory=list)
    conflicting: dict[str, list[str]] = field(default_factory=dict)
    unexpected: dict[str, list[str]] = field(default_factory=dict)
    strangers: list[str] = field(default_factory=list)
    extra_terminal_events: int = 0
    duplicate_events: int = 0
    duplicate_sends: int = 0
    dead_without_reason: int = 0
    decided_without_dead_letter: list[str] = field(default_factory=list)
    invalid_events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {"extra_terminal_events": self.extra_terminal_events,
                "conflicting": len(self.conflicting), "unexpected_status": len(self.unexpected),
                "dead_without_reason": self.dead_without_reason}


def _examples(items: Iterable[Any]) -> str:
    return ", ".join(str(i) for i in list(items)[:_EXAMPLES])


def account(ledger: Ledger, expected: Mapping[str, frozenset[str]], confirmed: Collection[str],
            *, duplicate_sends: int) -> Verdict:
    """Judge a campaign.

    ``expected`` maps each planned message to the terminal statuses it may end with,
    ``confirmed`` are the ids the broker confirmed to the producer (only those must
    arrive). Rules: every confirmed message has a terminal event; no message has two
    different terminal statuses; each has an allowed one; terminal events beyond one per
    message (distinct event ids: a message submitted twice is receipted twice) are no more
    than the duplicate submissions ICS saw; every event fits the contract; every dead
    letter has a reason, and every message the worker decided (rejected, expired, failed
    by the worker) left one.
    """
    verdict = Verdict(messages=len(confirmed), duplicate_sends=duplicate_sends)
    with ledger._lock:
        terminal = {m: dict(e) for m, e in ledger.terminal.items()}
        verdict.duplicate_events = ledger.duplicate_events
        verdict.invalid_events = list(ledger.invalid)
        dead = list(ledger.dead)
        swept = set(ledger.no_receipt)
    verdict.lost = sorted(m for m in confirmed if m not in terminal)
    verdict.strangers = sorted(m for m in terminal if m not in expected)
    for message_id, events in terminal.items():
        statuses = sorted(set(events.values()))
        verdict.extra_terminal_events += len(events) - 1
        if len(statuses) > 1:
            verdict.conflicting[message_id] = statuses
        allowed = expected.get(message_id)
        if allowed is not None and not set(statuses) <= allowed:
            verdict.unexpected[message_id] = statuses
    verdict.dead_without_reason = sum(1 for d in dead if d.reason is None and not d.x_death)
    dead_ids = {d.message_id for d in dead}
    worker_decided = {m for m, events in terminal.items()
                      if set(events.values()) & {"rejected", "expired"} and m not in swept}
    verdict.decided_without_dead_letter = sorted(worker_decided - dead_ids)
    _judge(verdict)
    return verdict


def _judge(v: Verdict) -> None:
    p = v.problems
    if v.lost:
        p.append(f"{len(v.lost)} confirmed messages have no terminal event (lost), "
                 f"e.g. {_examples(v.lost)}")
    if v.conflicting:
        p.append(f"{len(v.conflicting)} messages have two different terminal statuses, e.g. "
                 + _examples(f"{m}: {s}" for m, s in v.conflicting.items()))
    if v.unexpected:
        p.append(f"{len(v.unexpected)} messages ended with a status they should not have, "
                 "e.g. " + _examples(f"{m}: {s}" for m, s in v.unexpected.items()))
    if v.strangers:
        p.append(f"{len(v.strangers)} messages nobody sent have a final status, e.g. "
                 f"{_examples(v.strangers)}")
    if v.extra_terminal_events > v.duplicate_sends:
        p.append(f"{v.extra_terminal_events} extra terminal events (distinct event ids) but "
                 f"only {v.duplicate_sends} duplicate submissions to explain them")
    if v.invalid_events:
        p.append(f"{len(v.invalid_events)} events break the ReceiptEvent contract, e.g. "
                 f"{v.invalid_events[0]}")
    if v.dead_without_reason:
        p.append(f"{v.dead_without_reason} dead letters carry no x-ics-reason (nor x-death)")
    if v.decided_without_dead_letter:
        p.append(f"{len(v.decided_without_dead_letter)} rejected/expired messages left no dead "
                 f"letter, e.g. {_examples(v.decided_without_dead_letter)}")
