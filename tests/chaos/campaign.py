"""Campaigns whose outcome is known in advance, and a paced producer thread.

Every message's final status follows from its number alone (the sandbox runs with
``--delivery-ratio 1``, failures come from its fixed failing numbers), so a message that
is submitted twice ends the same way twice and the expected status of every message is
known: a wrong final status is a finding, not noise.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ics_sms.producers.errors import PublishError
from ics_sms.producers.publisher import Producer
from ics_sms.producers.retry import RetryPolicy
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.topology import Topology

__all__ = ["FIXED_OUTCOMES", "RECEIPTED_OUTCOMES", "TEMPLATE_ID", "Campaign",
           "CampaignPublisher", "build_campaign"]

TEMPLATE_ID = "1207161000000000001"

FIXED_OUTCOMES: tuple[tuple[str, str], ...] = (
    ("+919000000901", "failed"),   # DND
    ("+919000000906", "failed"),   # header blocked by DLT
    ("+919000000914", "failed"),   # undelivered
    ("+919000000400", "rejected"),  # refused in the answer
)
"""Sandbox test numbers with a fixed fate; every other number is delivered."""
RECEIPTED_OUTCOMES = tuple((to, s) for to, s in FIXED_OUTCOMES if s != "rejected")
"""The fixed fates that end with a receipt: a message whose answer was lost can still end
by its receipt (a record ICS refused has none)."""


@dataclass
class Campaign:
    requests: list[SendRequest]
    expected: dict[str, frozenset[str]]

    @property
    def ids(self) -> list[str]:
        return [r.message_id for r in self.requests]

    def __len__(self) -> int:
        return len(self.requests)

    def extend(self, other: Campaign) -> None:
        self.requests.extend(other.requests)
        self.expected.update(other.expected)


def _mobile(rng: random.Random) -> str:
    while True:
        number = f"+91{rng.choice('6789')}{rng.randrange(10**8, 10**9)}"
        if not number.startswith("+919000000"):
            return number


def build_campaign(count: int, campaign_id: str, *, service: str, promotional: str | None,
                   seed: int = 7, fixed_every: int = 50, service_every: int = 3,
                   links: bool = False, start: int = 0,
                   expires_at: datetime | None = None,
                   also_allowed: frozenset[str] = frozenset(),
                   fixed: Sequence[tuple[str, str]] = FIXED_OUTCOMES) -> Campaign:
    """``count`` messages; every ``fixed_every``-th to a fixed failing/refused number.

    Every ``service_every``-th goes to the service sender, the rest to the promotional one
    (when given).
    ``also_allowed`` adds statuses every message may end with (e.g. ``expired``); ``start``
    numbers the messages from there (to build a long campaign in slices); ``fixed`` are
    the numbers with a fixed fate the campaign cycles through.
    """
    rng = random.Random(seed + start)
    requests: list[SendRequest] = []
    expected: dict[str, frozenset[str]] = {}
    for index in range(start, start + count):
        message_id = f"{campaign_id}-{index}"
        if fixed_every and index % fixed_every == fixed_every // 2:
            to, status = fixed[index // fixed_every % len(fixed)]
        else:
            to, status = _mobile(rng), "delivered"
        sender = service if promotional is None or index % service_every == 0 \
            else promotional
        if sender == service:
            text = f"{rng.randrange(1000, 9999)} is your ACME login code."
        elif links:
            text = f"ACME: 20% off today https://shop.example.in/sale?i={index}"
        else:
            text = f"ACME: 20% off everything today, offer {index}."
        requests.append(SendRequest(
            message_id=message_id, campaign_id=campaign_id, to=to, text=text, sender=sender,
            dlt_template_id=TEMPLATE_ID, expires_at=expires_at,
            metadata={"chaos": True, "index": index}))
        expected[message_id] = frozenset({status}) | also_allowed
    return Campaign(requests, expected)


class CampaignPublisher(threading.Thread):
    """Publishes a campaign with the producer library, in chunks, at an optional pace.

    A campaign engine retries what the producer could not confirm (``message_id`` is the
    idempotency key), so a :class:`PublishError` is recorded and the unconfirmed rest of
    the chunk is published again, up to ``max_retries`` times.
    """

    def __init__(self, url: str, topology: Topology, senders: Senders,
                 requests: Sequence[SendRequest], *, chunk: int = 200,
                 rate_per_s: float | None = None, retry: RetryPolicy | None = None,
                 max_retries: int = 3) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.url = url
        self.topology = topology
        self.senders = senders
        self.requests = requests
        self.chunk = chunk
        self.rate_per_s = rate_per_s
        self.retry = retry or RetryPolicy()
        self.max_retries = max_retries
        self.confirmed: list[str] = []
        self.errors: list[str] = []
        self.confirm_times: list[float] = []
        self.started_at = 0.0
        self.finished_at = 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def __repr__(self) -> str:
        return f"<CampaignPublisher confirmed={len(self.confirmed)} errors={len(self.errors)}>"

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            with Producer(self.url, self.topology, self.senders, retry=self.retry,
                          connection_name="chaos producer") as producer:
                for start in range(0, len(self.requests), self.chunk):
                    self._pace(start)
                    if self._halt.is_set():
                        break
                    self._publish(producer, list(self.requests[start:start + self.chunk]))
        except Exception as exc:  # recorded and asserted on by the scenario
            self.errors.append(f"producer stopped: {type(exc).__name__}: {exc}")
        finally:
            self.finished_at = time.monotonic()

    def halt(self) -> None:
        """Publish no further chunk (the one under way is finished); then :meth:`join`."""
        self._halt.set()

    def _pace(self, start: int) -> None:
        if self.rate_per_s:
            due = self.started_at + start / self.rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)  # pacing the campaign, not waiting for a result

    def _publish(self, producer: Producer, chunk: list[SendRequest]) -> None:
        for _attempt in range(self.max_retries + 1):
            try:
                producer.publish_many(chunk, on_progress=lambda _n: self._progress())
            except PublishError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self._confirm(chunk[:exc.confirmed])
                chunk = chunk[exc.confirmed:]
                continue
            self._confirm(chunk)
            return
        raise RuntimeError(f"{len(chunk)} messages unconfirmed after {self.max_retries} retries")

    def _progress(self) -> None:
        self.confirm_times.append(time.monotonic())

    def _confirm(self, chunk: list[SendRequest]) -> None:
        with self._lock:
            self.confirmed.extend(r.message_id for r in chunk)

    def confirmed_ids(self) -> list[str]:
        with self._lock:
            return list(self.confirmed)

    def first_confirm_after(self, instant: float) -> float | None:
        return next((t for t in list(self.confirm_times) if t > instant), None)
