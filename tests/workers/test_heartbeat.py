"""Worker heartbeats in Redis: written while the block runs, gone after it, read back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from ics_sms.schemas.settings import Settings
from ics_sms.workers.heartbeat import _Window, beating, read_heartbeats


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"t{uuid.uuid4().hex[:10]}."
    yield Settings(redis_url=redis_url, namespace=namespace)
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"ics-sms:{namespace}*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()


async def test_a_worker_is_listed_while_it_beats_and_not_after(settings: Settings) -> None:
    consuming = asyncio.Event()
    async with beating(settings, ["service", "promotional"], consuming):
        (beat,) = await read_heartbeats(settings)  # written before the block starts
        assert beat.lanes == "service,promotional"
        assert not beat.consuming
    assert await read_heartbeats(settings) == []
    other = settings.model_copy(update={"namespace": "elsewhere."})
    assert await read_heartbeats(other) == []


async def test_memory_settings_write_and_read_nothing() -> None:
    settings = Settings(redis_url="memory://")
    async with beating(settings, ["service"], asyncio.Event()):
        assert await read_heartbeats(settings) == []


def test_the_window_counts_the_requests_since_the_newest_sample_a_minute_old() -> None:
    window = _Window()
    assert window.add(0.0, (10, 1)) == (0, 0)
    assert window.add(30.0, (40, 4)) == (30, 3)
    assert window.add(61.0, (50, 4)) == (40, 3)  # from the newest sample a minute old
    assert window.add(95.0, (50, 4)) == (10, 0)  # the sample of t=0 dropped out
    assert window.add(200.0, (50, 4)) == (0, 0)
