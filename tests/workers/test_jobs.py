"""Counts read from message headers are never trusted beyond the policy's bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ics_sms.broker.base import Delivery
from ics_sms.schemas.senders import Lane, Senders
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import HEADER_ATTEMPT, HEADER_PARKED, Topology
from ics_sms.workers.jobs import Job, JobFactory
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import MAX_PARKS
from tests.workers.conftest import SERVICE, request

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
