"""Publishing through the producer library (kombu, confirms), all at once or paced.

The producer is synchronous: these functions run in a worker thread
(``asyncio.to_thread``) so that the event loop keeps reading events meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ics_sms.bench.messages import NO_RECEIPT, SERVICE, message_id, requests
from ics_sms.demo.tracker import DemoTracker
from ics_sms.producers.publisher import Producer
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings

__all__ = ["PaceResult", "publish_all", "publish_paced", "stopper"]

_CHUNK = 1000


def _producer(settings: Settings, senders: Senders, max_in_flight: int) -> Producer:
    return Producer(settings.broker_url, settings.topology, senders, max_in_flight=max_in_flight,
                    connection_name="ics-sms bench producer")


@contextmanager
def stopper() -> Iterator[threading.Event]:
    """An event set when the block ends: a publishing thread stops when its caller does
    (an interrupted run must not wait for a whole campaign to go out)."""
    stop = threading.Event()
    try:
        yield stop
    finally:
        stop.set()


def _until(stop: threading.Event, items: Iterable[dict[str, Any]]
           ) -> Iterator[dict[str, Any]]:
    for item in items:
        if stop.is_set():
            return
        yield item


def publish_all(settings: Settings, senders: Senders, items: Iterable[dict[str, Any]], *,
                max_in_flight: int, stop: threading.Event, tracker: DemoTracker | None = None
                ) -> tuple[int, float]:
    """Publish everything; (confirmed, seconds), connect excluded. With ``tracker``, in
    chunks, each message's publish instant noted in it first; ``stop`` ends it early."""
    with _producer(settings, senders, max_in_flight) as producer:
        started = time.perf_counter()
        if tracker is None:
            confirmed = producer.publish_many(_until(stop, items))
        else:
            confirmed = 0
            iterator = _until(stop, items)
            while chunk := list(itertools.islice(iterator, _CHUNK)):
                tracker.published([item["message_id"] for item in chunk])
                confirmed += producer.publish_many(chunk)
        return confirmed, time.perf_counter() - started


@dataclass(slots=True)
class PaceResult:
    published: int
    elapsed_s: float
    calls: int

    @property
    def rate_per_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s else 0.0


def publish_paced(settings: Settings, senders: Senders, tag: str, tracker: DemoTracker, *,
                  rate_per_s: float, duration_s: float, stop: threading.Event,
                  max_in_flight: int) -> PaceResult:
    """Service-lane messages at ``rate_per_s`` for ``duration_s`` (or until ``stop``).

    Whatever is due is published in one call, which returns once confirmed; the publish
    instant of a message is when that call starts.
    """
    sent = calls = 0
    with _producer(settings, senders, max_in_flight) as producer:
        started = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= duration_s:
                break
            due = int(elapsed * rate_per_s) + 1 - sent
            if due <= 0:
                time.sleep(min((sent - elapsed * rate_per_s) / rate_per_s, 0.005))
                continue
            batch = list(requests(tag, due, sender=SERVICE, to=NO_RECEIPT, start=sent))
            tracker.published([message_id(tag, sent + i) for i in range(due)])
            sent += producer.publish_many(batch)
            calls += 1
        return PaceResult(sent, time.monotonic() - started, calls)
