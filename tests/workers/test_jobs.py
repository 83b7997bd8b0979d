"""What a worker decides from a send request alone (before ICS is called)."""

from __future__ import annotations

import orjson

from ics_sms.schemas.messages import MAX_METADATA_BYTES, Status
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_ERROR, HEADER_REASON
from tests.workers.conftest import FakeIcs, Pipeline, running_worker


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
