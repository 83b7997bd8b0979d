"""Self-tracked senders: links are shortened before segmenting, stored before sending."""

from __future__ import annotations

from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import ClickTracking, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.links import InMemoryLinkStore, RedisLinkStore
from tests.workers.conftest import SERVICE, FakeIcs, Pipeline, request, running_worker

TRACKED = SERVICE.model_copy(update={"name": "tracked", "click_tracking": ClickTracking.SELF,
                                     "tracking_token": "tracked-token-0123456789"})
SENDERS = Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE, TRACKED.name: TRACKED})
LONG_URL = "https://shop.example.in/sale/" + "x" * 120


async def test_links_are_rewritten_stored_and_counted_in_segments(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    store = InMemoryLinkStore()
    text = f"Sale! {LONG_URL}, again: {LONG_URL}."
    await pipeline.publish(request(1, sender="tracked", text=text))
    async with running_worker(worker_settings, SENDERS, link_store=store):
        [event] = await pipeline.next_events(1)
    [record] = fake_ics.records
    base = str(worker_settings.public_url).rstrip("/") + "/l/"
    assert LONG_URL not in record["smstext"] and record["smstext"].count(base) == 2
    code = record["smstext"].split(base)[1][:10]
    found = await store.click(code)
    assert found is not None and found[0].url == LONG_URL and found[0].message_id == "m1"
    assert event.status is Status.SUBMITTED and event.segments == 1  # the long text was 2


async def test_without_the_link_store_tracked_messages_wait_and_others_go(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    dead_store = RedisLinkStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    settings = worker_settings.model_copy(update={"max_attempts": 2})
    await pipeline.publish(request(1, sender="tracked", text=f"Go {LONG_URL}"),
                           request(2, sender="tracked", text="no link here"))
    async with running_worker(settings, SENDERS, link_store=dead_store):
        events = {e.message_id: e for e in await pipeline.next_events(2)}
    assert events["m2"].status is Status.SUBMITTED
    assert events["m1"].status is Status.FAILED and "link store" in (events["m1"].error or "")
    assert [r["smstext"] for r in fake_ics.records] == ["no link here"]


async def test_untracked_senders_keep_their_links(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1, text=f"Go {LONG_URL}"))
    async with running_worker(worker_settings, SENDERS,
                              link_store=RedisLinkStore("redis://127.0.0.1:1/0")):
        await pipeline.next_events(1)
    assert fake_ics.records[0]["smstext"] == f"Go {LONG_URL}"

