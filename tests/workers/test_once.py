"""Effectively once: a message is claimed before it is sent, and never sent twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from ics_sms.cli.publish_cmd import publish_command
from ics_sms.schemas.messages import Status
from ics_sms.schemas.senders import Senders, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_REASON
from ics_sms.stores.messages import ClaimResult, State, fingerprint, open_message_store
from ics_sms.workers.sweeper import NO_RECEIPT
from tests.stores.test_messages import claim
from tests.workers.conftest import (
    SERVICE,
    FakeIcs,
    Pipeline,
    accept_all,
    fixed_clock,
    request,
    running_worker,
    status,
)


async def test_a_redelivered_submitted_message_is_not_sent_again(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1), publish_id="p1")
    async with running_worker(worker_settings):
        [first] = await pipeline.next_events(1)
        await pipeline.publish(request(1), publish_id="p1")  # as the broker redelivers it
        [again] = await pipeline.next_events(1)
    assert first.status is again.status is Status.SUBMITTED
    assert again.event_id == first.event_id  # re-emitted from the record
    assert again.provider_message_id == first.provider_message_id
    assert len(fake_ics.records) == 1


async def test_the_same_message_id_with_other_content_is_a_duplicate(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [first] = await pipeline.next_events(1)
        await pipeline.publish(request(1, text="something else"))
        [duplicate] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert first.status is Status.SUBMITTED
    assert duplicate.status is Status.REJECTED and duplicate.error_code == "duplicate"
    assert duplicate.final is False  # the message's final status is not this one
    assert dead.headers[HEADER_REASON] == "duplicate"
    assert [r["smstext"] for r in fake_ics.records] == ["hello 1"]


async def test_the_same_request_published_again_is_a_duplicate_not_a_redelivery(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [first] = await pipeline.next_events(1)
        await pipeline.publish(request(1))  # the campaign engine publishes it again
        await pipeline.publish(request(1))  # and again
        duplicates = await pipeline.next_events(2)
        await pipeline.next_dead(2)
    assert first.status is Status.SUBMITTED
    assert [(d.status, d.error_code, d.final) for d in duplicates] == [
        (Status.REJECTED, "duplicate", False)] * 2
    assert len({d.event_id for d in duplicates}) == 2  # one per publish
    assert len(fake_ics.records) == 1


async def test_a_claim_whose_worker_died_before_sending_is_sent_after_its_lease(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    settings = worker_settings.model_copy(update={"claim_lease_s": 1.0})
    async with open_message_store(settings) as store:  # a worker claimed it, then died
        [(claimed, _)] = await store.claim([claim(1, fingerprint(request(1), "p1"))],
                                           token="dead-worker", lease_s=1.0)
    assert claimed is ClaimResult.CLAIMED
    await pipeline.publish(request(1), publish_id="p1")  # the broker redelivers it
    async with running_worker(settings):
        [event] = await pipeline.next_events(1, timeout_s=30)
    assert event.status is Status.SUBMITTED
    assert len(fake_ics.records) == 1


async def test_a_reused_id_refused_before_sending_is_a_duplicate_not_a_second_final(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [first] = await pipeline.next_events(1)
        await pipeline.publish(request(1, sender="nobody"))  # the id reused, badly
        [refused] = await pipeline.next_events(1)
        await pipeline.next_dead(1)
    assert first.status is Status.SUBMITTED
    assert (refused.status, refused.error_code, refused.final) == (
        Status.REJECTED, "duplicate", False)


async def test_a_redelivered_refusal_is_the_same_final_event(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    bad = request(1, sender="nobody")
    await pipeline.publish(bad, publish_id="p1")
    async with running_worker(worker_settings):
        events = await pipeline.next_events(1)
        await pipeline.publish(bad, publish_id="p1")  # redelivered: its ack was lost
        events += await pipeline.next_events(1)
        await pipeline.next_dead(2)
    assert {(e.status, e.error_code, e.final) for e in events} == {
        (Status.REJECTED, "unknown_sender", None)}
    assert len({e.event_id for e in events}) == 1
    async with open_message_store(worker_settings) as store:
        [(result, record)] = await store.claim([claim(1, fingerprint(bad, "p1"))])
    assert result is ClaimResult.DONE and record is not None
    assert record.state is State.REJECTED
    assert not fake_ics.requests


async def test_an_answer_that_timed_out_leaves_messages_uncertain_until_the_deadline(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.delay_s = 1.0  # ICS takes the request, the answer comes too late
    settings = worker_settings.model_copy(update={"ics_timeout_s": 0.2,
                                                  "receipt_deadline_s": 1.0})
    await pipeline.publish(request(1), publish_id="p1")
    await pipeline.publish(request(1), publish_id="p1")  # redelivered meanwhile
    await pipeline.publish(request(2))
    async with running_worker(settings):
        events = await pipeline.next_events(2)
    assert {e.message_id for e in events} == {"m1", "m2"}
    assert {(e.status, e.error_code) for e in events} == {(Status.EXPIRED, NO_RECEIPT)}
    assert all(e.campaign_id == "c1" and e.sender == "otp" for e in events)
    assert sorted(r["smstext"] for r in fake_ics.records) == ["hello 1", "hello 2"]
    assert pipeline.events.empty()


async def test_a_server_error_after_the_request_is_not_retried(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    answered = asyncio.Event()

    def fail_after_taking_it(body: dict[str, Any]) -> web.Response:
        answered.set()
        return status(500)(body)

    fake_ics.responders = [fail_after_taking_it]
    await pipeline.publish(request(1), publish_id="p1")
    async with running_worker(worker_settings):
        await asyncio.wait_for(answered.wait(), 20)  # the stop drains the batch in flight
    assert len(fake_ics.requests) == 1
    async with open_message_store(worker_settings) as store:
        [(result, record)] = await store.claim([claim(1, fingerprint(request(1), "p1"))])
    assert result is ClaimResult.BUSY and record is not None and record.state == "uncertain"
    assert pipeline.events.empty()


async def test_a_message_ics_certainly_did_not_get_is_released_and_sent_later(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(429, {"Retry-After": "0"}), status(404), status(404),
                           accept_all]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1, timeout_s=30)
    assert event.status is Status.SUBMITTED
    assert len(fake_ics.records) == 4


async def test_a_sender_may_opt_in_to_resending_uncertain_messages(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(500), accept_all]
    otp = SERVICE.model_copy(update={"resend_uncertain": True})
    senders = Senders(default=otp.name, senders={otp.name: otp})
    await pipeline.publish(request(1))
    async with running_worker(worker_settings, senders):
        [event] = await pipeline.next_events(1)
    assert event.status is Status.SUBMITTED and event.attempt == 2  # the resend shows
    assert len(fake_ics.records) == 2


async def test_a_redelivery_after_expiry_does_not_end_a_sent_message_twice(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    sent_at = datetime.now(UTC)
    message = request(1, expires_at=(sent_at + timedelta(minutes=10)).isoformat())
    await pipeline.publish(message, publish_id="p1")
    async with running_worker(worker_settings, clock=fixed_clock(sent_at)):
        [first] = await pipeline.next_events(1)
    await pipeline.publish(message, publish_id="p1")  # its ack was lost: redelivered
    async with running_worker(worker_settings, clock=fixed_clock(sent_at + timedelta(hours=1))):
        [again] = await pipeline.next_events(1)
    assert first.status is again.status is Status.SUBMITTED
    assert again.event_id == first.event_id
    assert len(fake_ics.records) == 1


async def test_a_campaign_file_published_three_times_is_sent_once(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings, tmp_path: Path
) -> None:
    url = worker_settings.broker_url.get_secret_value()
    if url.startswith("memory://"):
        pytest.skip("`ics-sms publish` publishes to RabbitMQ (the rabbitmq case runs it)")
    senders_file = tmp_path / "senders.toml"
    save_senders(senders_file, Senders(default=SERVICE.name, senders={SERVICE.name: SERVICE}))
    campaign = tmp_path / "spring.csv"
    campaign.write_text("to,text\n+447700900123,hello one\n+447700900124,hello two\n")
    env = {"ICS_SMS_BROKER_URL": url, "ICS_SMS_NAMESPACE": worker_settings.namespace,
           "ICS_SMS_SENDERS_FILE": str(senders_file)}
    for _ in range(3):  # the operator runs the same command three times
        result = await asyncio.to_thread(CliRunner().invoke, publish_command,
                                         [str(campaign), "--campaign-id", "spring"], env=env)
        assert result.exit_code == 0, result.output
    async with running_worker(worker_settings):
        events = await pipeline.next_events(6)  # 2 submitted + 2 x 2 duplicate refusals
        await pipeline.next_dead(4)
    assert sorted(r["smstext"] for r in fake_ics.records) == ["hello one", "hello two"]
    submitted = [e for e in events if e.status is Status.SUBMITTED]
    refused = [e for e in events if e.status is Status.REJECTED]
    assert len({e.message_id for e in submitted}) == 2
    assert {(e.error_code, e.final) for e in refused} == {("duplicate", False)}
    assert {e.message_id for e in refused} == {e.message_id for e in submitted}
    assert len({e.event_id for e in refused}) == 4  # one per extra publish
