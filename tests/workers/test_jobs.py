"""What a worker decides from a send request and its headers, before ICS is called.

Counts read from message headers are never trusted beyond the policy's bounds; an
oversized request is refused with its reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ics_sms.broker.base import Delivery
from ics_sms.schemas.messages import MAX_METADATA_BYTES, Status
from ics_sms.schemas.senders import Lane, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_PARKED,
    HEADER_REASON,
    Topology,
)
from ics_sms.workers.jobs import Job, JobFactory
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import MAX_PARKS
from tests.workers.conftest import SERVICE, FakeIcs, Pipeline, request, running_worker

TOPOLOGY = Topology(namespace="unit.")
MAX_ATTEMPTS = 5
NOW = datetime(2026, 11, 27, 8, tzinfo=UTC)


def job_with(headers: dict[str, Any]) -> Job:
    factory = JobFactory(TOPOLOGY, Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE}),
                         SmsgidSigner("s" * 32), Outcomes(TOPOLOGY), max_attempts=MAX_ATTEMPTS,
                         link_secret=b"k" * 32, link_base_url="https://l.example/")
    body = request(1).model_dump_json().encode()
    delivery = Delivery(body, TOPOLOGY.send_exchange, "r", 1, False, 0,
                        TOPOLOGY.send_queue(Lane.SERVICE), headers)
    job = factory.decide(delivery, NOW)
    assert isinstance(job, Job)
    return job


@pytest.mark.parametrize(("claimed", "attempt"), [
    (None, 1), (1, 1), (3, 3), (MAX_ATTEMPTS, MAX_ATTEMPTS),
    (MAX_ATTEMPTS + 1, MAX_ATTEMPTS), (10**9, MAX_ATTEMPTS), (2**200, MAX_ATTEMPTS),
    (0, 1), (-1, 1), (-(10**9), 1),
    ("7", 1), (2.0, 1), (True, 1), ([3], 1), (b"3", 1),
])
def test_the_attempt_header_is_clamped_to_the_policy(claimed: object, attempt: int) -> None:
    headers = {} if claimed is None else {HEADER_ATTEMPT: claimed}
    assert job_with(headers).attempt == attempt


@pytest.mark.parametrize(("claimed", "parked"), [
    (None, 0), (4, 4), (MAX_PARKS, MAX_PARKS), (10**9, MAX_PARKS), (-3, 0), ("9", 0),
    (False, 0),
])
def test_the_parked_header_is_clamped_too(claimed: object, parked: int) -> None:
    headers = {} if claimed is None else {HEADER_PARKED: claimed}
    assert job_with(headers).parked == parked


def test_the_factory_shows_its_bounds() -> None:
    factory = JobFactory(TOPOLOGY, Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE}),
                         SmsgidSigner("s" * 32), Outcomes(TOPOLOGY), max_attempts=0,
                         link_secret=b"k" * 32, link_base_url="https://l.example/")
    assert repr(factory) == "<JobFactory senders=1 max_attempts=1>"


async def test_oversized_metadata_is_dead_lettered_with_the_reason(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    """A producer that skipped validation: the worker refuses it, and the event it
    publishes does not carry the metadata along."""
    body = orjson.dumps({"message_id": "big-1", "campaign_id": "c1", "to": "+447700900123",
                         "text": "hello", "metadata": {"blob": "x" * 100_000}})
    await pipeline.publish_raw(body)
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert (event.message_id, event.status, event.metadata) == ("big-1", Status.REJECTED, {})
    assert event.error is not None and event.error.startswith(
        f"metadata: is 100011 bytes as JSON, more than {MAX_METADATA_BYTES}")
    assert dead.headers[HEADER_REASON] == "invalid_message"
    assert str(dead.headers[HEADER_ERROR]).startswith("metadata: ")
    assert fake_ics.requests == []
