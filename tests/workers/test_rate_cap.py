"""A batch never costs more than a second of its sender's rate: the rest waits its turn."""

from __future__ import annotations

from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings
from tests.workers.conftest import SERVICE, FakeIcs, Pipeline, request, running_worker


async def test_a_batch_larger_than_a_second_of_the_rate_is_sent_in_parts(
        pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings) -> None:
    slow = SERVICE.model_copy(update={"rate_per_s": 4.0})
    senders = Senders(default=slow.name, senders={slow.name: slow})
    settings = worker_settings.model_copy(update={"linger_ms": 200.0})  # one batch of 10
    await pipeline.publish(*(request(i) for i in range(10)))
    async with running_worker(settings, senders):
        events = await pipeline.next_events(10, timeout_s=30)
    assert {(e.status, e.attempt) for e in events} == {(Status.SUBMITTED, 1)}
    assert len({e.message_id for e in events}) == 10
    sizes = [len(r["smstosend"]) for r in fake_ics.requests]
    assert max(sizes) == 4 and sum(sizes) == 10, sizes
