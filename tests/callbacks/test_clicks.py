"""GET /l/{code}: a redirect, a clicked event per click, a small 404 otherwise."""

from __future__ import annotations

import time

from ics_sms.schemas.messages import Status
from ics_sms.stores.links import InMemoryLinkStore, ShortLink
from tests.callbacks.receiver_helpers import EventsQueue, Receiver, StartReceiver

LINK = ShortLink(code="Ab3dEf9hIj", url="https://shop.example.in/sale?x=1", message_id="m-1",
                 campaign_id="spring", sender="acme-otp", metadata={"list": "vip"})


async def follow(receiver: Receiver, path: str, user_agent: str = "test-agent"
                 ) -> tuple[int, str]:
    async with receiver.session.get(receiver.url(path), allow_redirects=False,
                           headers={"User-Agent": user_agent}) as response:
        return response.status, response.headers.get("Location") or await response.text()


async def test_a_click_redirects_and_becomes_a_complete_event(
    start_receiver: StartReceiver, events_queue: EventsQueue
) -> None:
    store = InMemoryLinkStore()
    await store.put_many([LINK])
    receiver = await start_receiver(links=store)
    assert await follow(receiver, f"/l/{LINK.code}") == (302, LINK.url)
    assert await follow(receiver, f"/l/{LINK.code}", "other-agent") == (302, LINK.url)
    first, second = (event for _key, event in events_queue.take())
    assert first.status is Status.CLICKED and first.click_count == 1
    assert (first.message_id, first.campaign_id, first.sender, first.url) == (
        "m-1", "spring", "acme-otp", LINK.url)
    assert first.metadata == {"list": "vip"} and first.user_agent == "test-agent"
    assert second.click_count == 2 and second.event_id != first.event_id


async def test_unknown_and_expired_codes_get_a_small_404_page(
    start_receiver: StartReceiver, events_queue: EventsQueue
) -> None:
    now = [time.monotonic()]
    store = InMemoryLinkStore(ttl_s=60, clock=lambda: now[0])
    await store.put_many([LINK])
    receiver = await start_receiver(links=store)
    status, page = await follow(receiver, "/l/nothing")
    assert status == 404 and "unknown or has expired" in page and "Traceback" not in page
    now[0] += 61
    status, _ = await follow(receiver, f"/l/{LINK.code}")
    assert status == 404
    assert events_queue.take() == []
