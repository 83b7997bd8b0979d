"""GET /l/{code}: a redirect, a clicked event per click, a small 404 otherwise."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from ics_sms.callbacks.clicks import is_bound, link_secrets
from ics_sms.schemas.messages import Status
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import MessageContext
from ics_sms.stores.history import CampaignCounts
from ics_sms.stores.links import InMemoryLinkStore, ShortLink
from ics_sms.stores.messages import Claim, InMemoryMessageStore
from ics_sms.workers.links import link_code
from tests.callbacks.receiver_helpers import EventsQueue, Receiver, StartReceiver

SECRET = b"test-callback-secret-of-32-bytes-or-more"
"""The callback secret of the test settings: workers make link codes with it."""
URL = "https://shop.example.in/sale?x=1"
LINK = ShortLink(code=link_code(SECRET, "m-1", URL), url=URL, message_id="m-1",
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


async def test_each_confirmed_click_counts_in_its_message_and_campaign(
    start_receiver: StartReceiver, events_queue: EventsQueue
) -> None:
    links, messages = InMemoryLinkStore(), InMemoryMessageStore()
    await links.put_many([LINK])
    context = MessageContext(message_id="m-1", campaign_id="spring", sender="acme-otp")
    await messages.claim([Claim("m-1", "fp", 1, context, to="+919812345678")], token="t")
    receiver = await start_receiver(links=links, messages=messages)
    for _ in range(2):
        assert await follow(receiver, f"/l/{LINK.code}") == (302, LINK.url)
    assert len(events_queue.take()) == 2  # both click events confirmed

    async def counted() -> CampaignCounts:
        while True:
            counts = await messages.campaign("spring")
            if counts is not None and counts.clicks >= 2:
                return counts
            await asyncio.sleep(0.01)

    async with asyncio.timeout(10):
        counts = await counted()
    assert (counts.clicks, counts.unique_clicks) == (2, 1)
    view = await messages.message("m-1")
    assert view is not None and view.clicks == 2
    assert [e.note for e in view.timeline if e.state == "clicked"] == [URL, URL]


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


def unbound_refusals() -> float:
    value = REGISTRY.get_sample_value("ics_sms_receipts_refused_total",
                                      {"reason": "unbound_link"})
    return value or 0.0


@pytest.mark.parametrize("tampered", [
    LINK.model_copy(update={"url": "https://phish.example/login"}),
    LINK.model_copy(update={"message_id": "m-2"}),
])
async def test_a_link_record_not_bound_to_its_message_gives_no_click(
    start_receiver: StartReceiver, events_queue: EventsQueue, tampered: ShortLink
) -> None:
    store = InMemoryLinkStore()
    await store.put_many([tampered])
    receiver = await start_receiver(links=store)
    before = unbound_refusals()
    status, page = await follow(receiver, f"/l/{LINK.code}")
    assert status == 404 and "phish" not in page
    assert unbound_refusals() == before + 1
    assert events_queue.take() == []


def test_a_link_record_is_bound_only_under_its_own_code() -> None:
    secrets = [SECRET]
    assert is_bound(LINK, LINK.code, secrets)
    other = link_code(SECRET, "m-1", "https://other.example/")
    assert not is_bound(LINK, other, secrets)
    assert not is_bound(LINK.model_copy(update={"code": other}), LINK.code, secrets)


def test_links_made_with_the_previous_secret_stay_bound(amqp_settings: Settings) -> None:
    rotated = amqp_settings.model_copy(update={
        "callback_secret": SecretStr("the-new-secret-of-at-least-32-bytes-long"),
        "callback_secret_previous": amqp_settings.callback_secret,
    })
    assert is_bound(LINK, LINK.code, link_secrets(rotated))
    assert not is_bound(LINK, LINK.code, link_secrets(rotated)[:1])
