"""The dead-letters library (``ics_sms.workers.dead_letters``): what the CLI and the
operator console share, called directly, on real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from ics_sms.broker.base import Broker, Delivery
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.workers.dead_letters import (
    HEADER_REPLAY,
    REPLAY_KEY,
    DeadLetterError,
    Replayed,
    Selection,
    age_text,
    collect,
    counts_by_reason,
    mask,
    parse_age,
    purge,
    replay,
)
from tests.workers.conftest import request
from tests.workers.dead_letters_helpers import dead_letter, declared_broker


@pytest.fixture
async def broker(amqp_settings: Settings) -> AsyncIterator[Broker]:
    async with declared_broker(amqp_settings) as opened:
        yield opened


@pytest.fixture
def settings(amqp_settings: Settings, redis_url: str) -> Settings:
    return amqp_settings.model_copy(update={"redis_url": redis_url})


def test_ages_and_selection() -> None:
    assert [parse_age(v) for v in ("90", "90s", "30m", "2h", "1d", "1w", " 1.5h ")] == [
        90, 90, 1800, 7200, 86400, 7 * 86400, 5400]
    for bad in ("", "2x", "-1h", "h"):
        with pytest.raises(ValueError, match="is not an age"):
            parse_age(bad)
    assert Selection().everything and not Selection(reasons=frozenset({"dlt"})).everything
    assert [age_text(s) for s in (None, 45, 200, 7200, 100_000)] == [
        "?", "45s", "3m20s", "2h", "1d3h"]
    assert mask("+447700900123") == "+4477*****123" and mask("+12345") == "+12345"


async def test_collect_chooses_and_keeps_every_dead_letter(settings: Settings,
                                                           broker: Broker) -> None:
    await dead_letter(settings, broker, request(1, sender="otp"), "sender_unauthorized")
    await dead_letter(settings, broker, request(2, campaign_id="c2"), "dlt")
    await dead_letter(settings, broker, request(3, sender="otp"), "sender_unauthorized")
    everything = await collect(settings, Selection())
    assert [d.message_id for d in everything] == ["m1", "m2", "m3"]
    assert counts_by_reason(everything) == {"sender_unauthorized": 2, "dlt": 1}
    assert list(counts_by_reason(everything)) == ["sender_unauthorized", "dlt"]
    first = everything[0]
    assert (first.sender, first.campaign, first.to, first.text) == (
        "otp", "c1", "+447700900123", "hello 1")
    assert "+447700900123" not in repr(first) and "hello" not in repr(first)
    assert first.summary(first.dead_at or 0)["to"] == "+4477*****123"
    chosen = await collect(settings, Selection(senders=frozenset({"otp"}),
                                               campaigns=frozenset({"c1"})))
    assert [d.message_id for d in chosen] == ["m1", "m3"]
    assert await collect(settings, Selection(older_than_s=3600)) == []
    assert first.dead_at is not None  # ages are measured from ``now``
    assert len(await collect(settings, Selection(older_than_s=3600),
                             now=first.dead_at + 7200)) == 3
    assert await broker.queue_depth(settings.topology.dead_queue) == 3


async def test_passes_side_by_side_each_find_every_dead_letter(settings: Settings,
                                                               broker: Broker) -> None:
    await asyncio.gather(*(dead_letter(settings, broker, request(i), "dlt")
                           for i in range(300)))
    found = await asyncio.gather(*(collect(settings, Selection()) for _ in range(3)))
    for letters in found:  # three console requests at once
        assert sorted(d.message_id for d in letters) == sorted(f"m{i}" for i in range(300))


async def test_replay_and_purge_handle_only_what_is_chosen(settings: Settings,
                                                           broker: Broker) -> None:
    await dead_letter(settings, broker, request(1), "sender_unauthorized")
    await dead_letter(settings, broker, request(2), "dlt")
    await dead_letter(settings, broker, request(3), "duplicate")
    await dead_letter(settings, broker, request(4), "unknown_sender")
    chosen = Selection(ids=frozenset({"m1", "m3"}))
    report = await replay(settings, chosen)
    assert report.replayed == [Replayed("m1", "sender_unauthorized", 1, "none")]
    assert [(s.message_id, s.reason) for s in report.skipped] == [("m3", "duplicate")]
    assert "another message" in report.skipped[0].why
    assert report.as_json()["replayed"] == [
        {"message_id": "m1", "reason": "sender_unauthorized", "replay": 1, "record": "none"}]
    [again] = await _sent(settings, broker, 1)  # the replay: a new publish, marked
    assert again.headers[HEADER_REPLAY] == 1
    assert SendRequest.model_validate_json(again.body).metadata[REPLAY_KEY] == 1
    second = await replay(settings, chosen)  # m1's dead letter is gone: nothing twice
    assert second.replayed == [] and [s.message_id for s in second.skipped] == ["m3"]
    assert await purge(settings, Selection(reasons=frozenset({"dlt", "duplicate"}))) == \
        Counter({"dlt": 1, "duplicate": 1})
    assert [d.message_id for d in await collect(settings, Selection())] == ["m4"]
    assert await broker.queue_depth(settings.topology.send_queue(Lane.SERVICE)) == 0


async def test_replay_needs_the_message_store(amqp_settings: Settings) -> None:
    memory = amqp_settings.model_copy(update={"redis_url": "memory://"})
    with pytest.raises(DeadLetterError, match="ICS_SMS_REDIS_URL: replay needs"):
        await replay(memory, Selection(ids=frozenset({"m1"})))


async def test_a_long_queue_is_read_in_chunks_and_keeps_every_dead_letter_once(
        amqp_settings: Settings, broker: Broker) -> None:
    settings = amqp_settings
    count = 450  # more than two chunks
    for start in range(0, count, 150):
        await asyncio.gather(*(dead_letter(settings, broker, request(i), "dlt")
                               for i in range(start, start + 150)))
    for _ in range(3):  # each pass leaves every dead letter, once
        order = [d.message_id for d in await collect(settings, Selection())]
        assert sorted(order) == sorted(f"m{i}" for i in range(count))


async def _sent(settings: Settings, broker: Broker, count: int) -> list[Delivery]:
    """Take ``count`` send requests from the service send queue."""
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    def take(delivery: Delivery) -> None:
        broker.ack(delivery)
        got.put_nowait(delivery)

    consumer = await broker.consume(settings.topology.send_queue(Lane.SERVICE), count, take)
    try:
        async with asyncio.timeout(30):
            return [await got.get() for _ in range(count)]
    finally:
        await consumer.cancel()
