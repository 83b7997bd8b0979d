"""The smsgid a job carries to ICS is bound to the sender that resolved for it."""

from __future__ import annotations

from datetime import UTC, datetime

from ics_sms.broker.base import Delivery
from ics_sms.schemas.senders import Lane, Senders
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import Topology
from ics_sms.workers.jobs import Job, JobFactory
from ics_sms.workers.outcomes import Outcomes
from tests.workers.conftest import SERVICE, request

TOPOLOGY = Topology(namespace="unit.")
SIGNER = SmsgidSigner("s" * 32)


def test_the_smsgid_verifies_for_the_resolved_sender_only() -> None:
    factory = JobFactory(TOPOLOGY, Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE}),
                         SIGNER, Outcomes(TOPOLOGY), max_attempts=3, link_secret=b"k" * 32,
                         link_base_url="https://l.example/")
    body = request(1).model_dump_json().encode()
    delivery = Delivery(body, TOPOLOGY.send_exchange, "r", 1, False, 0,
                        TOPOLOGY.send_queue(Lane.SERVICE), {})
    job = factory.decide(delivery, datetime(2026, 11, 27, 8, tzinfo=UTC))
    assert isinstance(job, Job)
    assert SIGNER.verify(job.smsgid, SERVICE.name) == job.request.message_id
    assert SIGNER.verify(job.smsgid, SERVICE.name + "-other") is None
    assert SIGNER.verify_legacy(job.smsgid) is None
