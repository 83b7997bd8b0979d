"""Prometheus metrics of the worker (names documented in docs/operations.md).

Counters are bumped once per batch, not per message, to keep the hot path cheap.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from ics_sms.broker.base import Outgoing
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import HEADER_ERROR, HEADER_PARKED, HEADER_REASON, Topology
from ics_sms.workers.notices import ThrottledLog

__all__ = ["BATCH_SIZE", "CONSUMED", "DEAD_LETTERED", "ICS_DURATION", "ICS_REQUESTS",
           "IN_FLIGHT", "count_outcomes"]

CONSUMED = Counter("ics_sms_worker_messages_consumed", "Send requests received.", ["lane"])
OUTCOMES = Counter("ics_sms_worker_outcomes", "What became of each send request.",
                   ["sender", "outcome"])
ICS_REQUESTS = Counter("ics_sms_ics_requests", "Requests to ICS by answer (HTTP status or "
                       "'error').", ["sender", "code"])
ICS_DURATION = Histogram("ics_sms_ics_request_duration_seconds", "Time of one ICS request.",
                         ["sender"], buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("ics_sms_ics_batch_size", "Records per ICS request.",
                       buckets=(1, 10, 50, 100, 250, 500, 750, 1000))
IN_FLIGHT = Gauge("ics_sms_worker_batches_in_flight", "ICS batches being submitted.", ["lane"])

DEAD_LETTERED = ThrottledLog("messages dead-lettered")
"""One line per sender and reason at most every few seconds: why messages were not sent
(rejected, expired, failed), with how many since the last line and one example error."""

for _lane in Lane:
    CONSUMED.labels(_lane.value)
    IN_FLIGHT.labels(_lane.value)


def count_outcomes(topology: Topology, sender: str,
                   outgoing: Iterable[Sequence[Outgoing]], requeued: int = 0) -> None:
    """Count the outcome of each settled message from what it caused to be published, and
    log (throttled) why any was dead-lettered."""
    tally: Tally[str] = Tally()
    dead: Tally[str] = Tally()  # reason -> messages dead-lettered for it
    examples: dict[str, object] = {}  # reason -> the error of its first message
    for messages in outgoing:
        for message in messages:
            if message.exchange == topology.events_exchange:
                status = message.routing_key.removeprefix("sms.")
                if status in ("submitted", "rejected", "expired", "failed"):
                    tally[status] += 1
            elif message.exchange == topology.retry_exchange:
                parked = bool(message.headers and HEADER_PARKED in message.headers)
                tally["parked" if parked else "retried"] += 1
            elif message.exchange == topology.dead_exchange:
                tally["dead_lettered"] += 1
                headers = message.headers or {}
                reason = str(headers.get(HEADER_REASON, "?"))
                dead[reason] += 1
                examples.setdefault(reason, headers.get(HEADER_ERROR))
    if requeued:
        tally["requeued"] += requeued
    for outcome, count in tally.items():
        OUTCOMES.labels(sender, outcome).inc(count)
    for reason, count in dead.items():
        error = examples[reason]
        DEAD_LETTERED.note((("sender", sender or "-"), ("reason", reason)), count,
                           example=None if error is None else str(error)[:200])
