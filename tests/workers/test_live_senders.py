"""The worker follows its senders while it runs: added, edited, disabled, default switched,
a token that cannot be read (that sender waits; the others flow)."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Sender, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.live import LiveSenders
from tests.stores.test_live import eventually
from tests.workers.conftest import (
    SERVICE,
    FakeIcs,
    Pipeline,
    request,
    running_worker,
)

NEW = SERVICE.model_copy(update={"name": "newone", "sender_id": "NEWONE",
                                 "tracking_token": "tracking-token-of-newone"})


async def change(live: LiveSenders, senders: Senders) -> None:
    snapshot = live.source.load()
    live.source.save(senders, expected=snapshot.version, actor="test", action="change")
    await live.reload()


def only(*senders: Sender, default: str | None = None) -> Senders:
    return Senders(default=default or senders[0].name, senders={s.name: s for s in senders})


async def test_a_sender_added_while_running_is_used_at_once(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    live = LiveSenders.fixed(only(SERVICE), worker_settings)
    async with running_worker(worker_settings, live):
        await change(live, only(SERVICE, NEW))
        await pipeline.publish(request(1, sender="newone"))
        [event] = await pipeline.next_events(1)
        await change(live, only(SERVICE, NEW, default="newone"))
        await pipeline.publish(request(2))  # no sender named: the new default
        [default] = await pipeline.next_events(1)
    assert (event.status, event.sender) == (Status.SUBMITTED, "newone")
    assert (default.status, default.sender) == (Status.SUBMITTED, "newone")
    assert [r["from"] for r in fake_ics.records] == ["NEWONE", "NEWONE"]


async def test_a_disabled_sender_rejects_its_messages_with_the_reason(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    live = LiveSenders.fixed(only(SERVICE), worker_settings)
    async with running_worker(worker_settings, live):
        await change(live, only(SERVICE.model_copy(update={"disabled": "DLT renewal"})))
        await pipeline.publish(request(1))
        [event] = await pipeline.next_events(1)
        await pipeline.next_dead(1)
    assert (event.status, event.error_code) == (Status.REJECTED, "sender_disabled")
    assert "DLT renewal" in (event.error or "")
    assert not fake_ics.requests


async def test_a_sender_without_its_token_waits_while_the_others_flow(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings,
) -> None:
    broken = NEW.model_copy(update={"token": None, "token_env": "ICS_SMS_TEST_UNSET_TOKEN"})
    settings = worker_settings.model_copy(update={"sender_pause_s": 1.0,
                                                  "sender_unauthorized_after_s": 2.0})
    live = LiveSenders.fixed(only(SERVICE, broken), settings)
    async with running_worker(settings, live):
        await pipeline.publish(request(1, sender="newone"), request(2, sender="otp"))
        events = {e.message_id: e for e in await pipeline.next_events(2, timeout_s=30)}
    assert events["m2"].status is Status.SUBMITTED
    assert (events["m1"].status, events["m1"].error_code) == (Status.FAILED,
                                                              "sender_unauthorized")
    assert "ICS_SMS_TEST_UNSET_TOKEN" in (events["m1"].error or "")
    assert [r["from"] for r in fake_ics.records] == ["ACMEIN"]


async def test_a_rotated_token_is_used_for_the_next_batch(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    live = LiveSenders.fixed(only(SERVICE), worker_settings)
    async with running_worker(worker_settings, live):
        await pipeline.publish(request(1))
        await pipeline.next_events(1)
        await change(live, only(SERVICE.model_copy(
            update={"token": SecretStr("tok-rotated-654321")})))
        await pipeline.publish(request(2))
        await pipeline.next_events(1)
    assert fake_ics.auth == [
        "Bearer tok-service-123456", "Bearer tok-rotated-654321"]


async def test_a_batch_gathered_before_a_token_rotation_is_sent_with_the_new_token(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    """A message taken in before the rotation but sent after it (its batch waited for a
    slot) goes out with the sender's token of now: ICS may refuse the old one already."""
    settings = worker_settings.model_copy(update={"batches_in_flight": 1})
    live = LiveSenders.fixed(only(SERVICE), settings)
    fake_ics.hold = asyncio.Event()
    async with running_worker(settings, live) as worker:
        await pipeline.publish(request(1))
        await eventually(lambda: bool(fake_ics.requests),
                         "m1 at ICS, which holds the lane's only slot")
        await pipeline.publish(request(2))
        await eventually(lambda: worker.stats.received >= 2, "m2 waiting for the slot")
        await change(live, only(SERVICE.model_copy(
            update={"token": SecretStr("tok-rotated-654321")})))
        fake_ics.hold.set()
        await pipeline.next_events(2)
    assert fake_ics.auth == ["Bearer tok-service-123456", "Bearer tok-rotated-654321"]
