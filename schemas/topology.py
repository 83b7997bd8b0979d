"""The one declaration of the RabbitMQ topology. No other module spells a queue name.

::

    sms.send (direct) ──service────▶ sms.send.service      (quorum)
                      ──promotional▶ sms.send.promotional  (quorum)
    sms.retry (direct) ─<lane>.<tier>▶ sms.retry.<lane>.<tier>  (TTL = tier, then
                                        dead-lettered back to sms.send with key <lane>)
    sms.events (topic) ──#──▶ sms.events                   (quorum)
    sms.dead (fanout)  ─────▶ sms.dead                     (quorum; reason in headers)

Send queues dead-letter to ``sms.dead`` (at-least-once) when a message exceeds the delivery
limit, so a message that crashes every worker still ends somewhere visible.

A ``namespace`` prefixes every name; the default (empty) gives the names of the contract.
A namespace ends with a separator (``.``, ``-`` or ``_``): ``staging.`` gives
``staging.sms.send``; ``staging`` is refused rather than read as ``stagingsms.send``.
Tests use a unique namespace so runs never see each other's messages.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ics_sms.schemas.senders import Lane

__all__ = [
    "DELAY_TIERS_S",
    "HEADER_ATTEMPT",
    "HEADER_ERROR",
    "HEADER_PUBLISH_ID",
    "HEADER_REASON",
    "HEADER_REFUSED_SINCE",
    "NAMESPACE_SEPARATORS",
    "Binding",
    "Exchange",
    "ExchangeType",
    "Queue",
    "QueueType",
    "Topology",
    "check_namespace",
]

DELAY_TIERS_S: tuple[int, ...] = (1, 5, 15, 60, 300)
"""Delay queue TTLs; a retry waits in the longest tier not above its backoff."""

DELIVERY_LIMIT = 20
"""Redeliveries (worker crashes) after which the broker dead-letters a send request."""

HEADER_ATTEMPT = "x-ics-attempt"
HEADER_REASON = "x-ics-reason"
HEADER_ERROR = "x-ics-error"
HEADER_PARKED = "x-ics-parked"
HEADER_PUBLISH_ID = "x-ics-publish-id"
"""Names one publish of a send request; redeliveries, retries and lane moves keep it."""
HEADER_REFUSED_SINCE = "x-ics-refused-since"
"""Epoch seconds since when the message waits because ICS refuses its sender's credentials."""


NAMESPACE_SEPARATORS = ".-_"
"""The last character of a non-empty namespace."""


def check_namespace(namespace: str) -> None:
    """Raise ``ValueError`` unless ``namespace`` is empty or ends with a separator."""
    if namespace and namespace[-1] not in NAMESPACE_SEPARATORS:
        raise ValueError(
            f"namespace {namespace!r} must end with one of {' '.join(NAMESPACE_SEPARATORS)} "
            f"(e.g. {namespace + '.'!r} gives {namespace}.sms.send)"
        )


class ExchangeType(StrEnum):
    DIRECT = "direct"
    TOPIC = "topic"
    FANOUT = "fanout"


class QueueType(StrEnum):
    QUORUM = "quorum"
    CLASSIC = "classic"


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType
    durable: bool = True


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange, queue and binding ics-sms uses."""

    namespace: str = ""
    queue_type: QueueType = QueueType.QUORUM

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    # -- names ---------------------------------------------------------------------------
    @property
    def send_exchange(self) -> str:
        return f"{self.namespace}sms.send"

    @property
    def retry_exchange(self) -> str:
        return f"{self.namespace}sms.retry"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}sms.events"

    @property
    def events_queue(self) -> str:
        return f"{self.namespace}sms.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}sms.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.namespace}sms.dead"

    def send_queue(self, lane: Lane) -> str:
        return f"{self.namespace}sms.send.{lane.value}"

    @staticmethod
    def send_routing_key(lane: Lane) -> str:
        return lane.value

    def delay_queue(self, lane: Lane, tier_s: int) -> str:
        return f"{self.namespace}sms.retry.{lane.value}.{tier_s}s"

    @staticmethod
    def delay_routing_key(lane: Lane, tier_s: int) -> str:
        return f"{lane.value}.{tier_s}s"

    @staticmethod
    def delay_tier(delay_s: float) -> int:
        """The longest delay tier not above ``delay_s`` (the shortest for tiny delays)."""
        index = bisect.bisect_right(DELAY_TIERS_S, delay_s) - 1
        return DELAY_TIERS_S[max(index, 0)]

    # -- declarations --------------------------------------------------------------------
    def _queue_args(self, **extra: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type.value}
        args.update(extra)
        return args

    def _send_queue_args(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"x-dead-letter-exchange": self.dead_exchange}
        if self.queue_type is QueueType.QUORUM:
            extra.update(
                {
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            )
        return self._queue_args(**extra)

    def exchanges(self) -> list[Exchange]:
        return [
            Exchange(self.send_exchange, ExchangeType.DIRECT),
            Exchange(self.retry_exchange, ExchangeType.DIRECT),
            Exchange(self.events_exchange, ExchangeType.TOPIC),
            Exchange(self.dead_exchange, ExchangeType.FANOUT),
        ]

    def queues(self) -> list[Queue]:
        queues = [Queue(self.send_queue(lane), self._send_queue_args()) for lane in Lane]
        for lane in Lane:
            for tier in DELAY_TIERS_S:
                args = self._queue_args(
                    **{
                        "x-message-ttl": tier * 1000,
                        "x-dead-letter-exchange": self.send_exchange,
                        "x-dead-letter-routing-key": self.send_routing_key(lane),
                    }
                )
                if self.queue_type is QueueType.QUORUM:
                    args["x-dead-letter-strategy"] = "at-least-once"
                    args["x-overflow"] = "reject-publish"
                queues.append(Queue(self.delay_queue(lane, tier), args))
        queues.append(Queue(self.events_queue, self._queue_args()))
        queues.append(Queue(self.dead_queue, self._queue_args()))
        return queues

    def bindings(self) -> list[Binding]:
        bindings = [
            Binding(self.send_exchange, self.send_queue(lane), self.send_routing_key(lane))
            for lane in Lane
        ]
        bindings += [
            Binding(self.retry_exchange, self.delay_queue(lane, t), self.delay_routing_key(lane, t))
            for lane in Lane
            for t in DELAY_TIERS_S
        ]
        bindings.append(Binding(self.events_exchange, self.events_queue, "#"))
        bindings.append(Binding(self.dead_exchange, self.dead_queue, ""))
        return bindings

    def queue_names(self) -> set[str]:
        return {q.name for q in self.queues()}
