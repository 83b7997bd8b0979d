"""The worker against real RabbitMQ and a scripted ICS: every rule of the send path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from structlog.testing import capture_logs

from ics_sms.schemas.messages import Encoding, Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import HEADER_REASON
from tests.workers.conftest import (
    PROMO,
    SERVICE,
    FakeIcs,
    Pipeline,
    accept_all,
    fixed_clock,
    request,
    running_worker,
    status,
)

INDIAN = {"to": "+919812345678", "dlt_template_id": "1207161000000000000"}


async def test_submits_a_batch_and_publishes_submitted_events(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(*(request(i) for i in range(5)))
    async with running_worker(worker_settings):
        events = await pipeline.next_events(5)
    assert {e.status for e in events} == {Status.SUBMITTED}
    assert {e.message_id for e in events} == {f"m{i}" for i in range(5)}
    event = events[0]
    assert event.provider_message_id and event.provider_message_id.startswith("mid-")
    assert event.segments == 1 and event.encoding is Encoding.GSM7
    assert event.sender == "otp" and event.campaign_id == "c1" and event.attempt == 1
    body = fake_ics.requests[0]
    assert body["user"] == "acme" and body["dlrurl"].endswith(SERVICE.tracking_path())
    assert fake_ics.auth[0] == "Bearer tok-service-123456"
    signer = SmsgidSigner("test-callback-secret-of-32-bytes-or-more")
    record = fake_ics.records[0]
    assert record["from"] == "ACMEIN" and record["to"] == "447700900123"
    assert signer.verify(record["smsgid"], "otp") == record["smsgid"].rpartition(".")[0]


async def test_batches_never_exceed_ics_limit(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(*(request(i) for i in range(2500)))
    async with running_worker(worker_settings.model_copy(update={"linger_ms": 200.0})):
        events = await pipeline.next_events(2500)
    assert len({e.message_id for e in events}) == 2500
    sizes = [len(r["smstosend"]) for r in fake_ics.requests]
    # batched, not one by one: the idle service lane sends what the first socket reads
    # brought at once (e.g. 347, 408, 1000, 245, 500), then batches grow to the limit
    assert max(sizes) <= 1000 and sum(sizes) == 2500 and len(sizes) <= 8


async def test_unknown_sender_is_rejected_and_dead_lettered(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1, sender="nobody"))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert event.status is Status.REJECTED and "nobody" in (event.error or "")
    assert dead.headers[HEADER_REASON] == "unknown_sender"
    assert fake_ics.requests == []


async def test_indian_numbers_need_dlt_template_and_entity(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1, to="+919812345678"), request(2, **INDIAN))
    async with running_worker(worker_settings):
        events = {e.message_id: e for e in await pipeline.next_events(2)}
    assert events["m1"].status is Status.REJECTED
    assert "dlt_template_id" in (events["m1"].error or "")
    assert events["m2"].status is Status.SUBMITTED
    [record] = fake_ics.records
    assert record["peid"] == SERVICE.dlt_entity_id
    assert record["templateid"] == "1207161000000000000"


async def test_unicode_text_reports_ucs2_segments(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish(request(1, text="नमस्ते " * 20))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
    assert event.encoding is Encoding.UCS2 and event.segments == 3


async def test_record_refused_by_ics_is_rejected_with_its_reason(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    from aiohttp import web

    def refuse(body: dict[str, object]) -> web.Response:
        records = body["smstosend"]
        assert isinstance(records, list)
        return web.json_response([{"to": r["to"], "smsgid": r["smsgid"],
                                   "Error": "Invalid mobile"} for r in records])

    fake_ics.responders = [refuse]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert event.status is Status.REJECTED and event.error == "Invalid mobile"
    assert dead.headers[HEADER_REASON] == "ics_refused"


async def test_transient_errors_retry_then_succeed(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(404), status(404), accept_all]  # a proxy: ICS never saw it
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
    assert event.status is Status.SUBMITTED and event.attempt == 3
    assert len(fake_ics.requests) == 3


async def test_retries_end_in_failed_event_and_dead_letter(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(404)]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert event.status is Status.FAILED and event.attempt == 3
    assert "404" in (event.error or "")
    assert dead.headers[HEADER_REASON] == "retries_exhausted"
    assert len(fake_ics.requests) == 3


async def test_throttling_waits_without_spending_attempts(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(429, {"Retry-After": "1"})] * 4 + [accept_all]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1, timeout_s=30)
    assert event.status is Status.SUBMITTED and event.attempt == 1
    assert len(fake_ics.requests) == 5


async def test_refused_credentials_pause_the_sender_instead_of_failing(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(401), accept_all]
    settings = worker_settings.model_copy(update={"sender_pause_s": 1.0})
    await pipeline.publish(request(1), request(2))
    async with running_worker(settings) as worker:
        events = await pipeline.next_events(2)
    assert {e.status for e in events} == {Status.SUBMITTED}
    assert worker.stats.received >= 4  # each message came back once after the pause


async def test_credentials_refused_for_longer_than_the_bound_fail_the_messages(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(401)]  # for good
    settings = worker_settings.model_copy(update={"sender_pause_s": 1.0,
                                                  "sender_unauthorized_after_s": 3.0})
    await pipeline.publish(request(1), request(2))
    with capture_logs() as logs:
        async with running_worker(settings):
            events = await pipeline.next_events(2, timeout_s=30)
            dead = await pipeline.next_dead(2)
    assert {(e.status, e.error_code) for e in events} == {(Status.FAILED, "sender_unauthorized")}
    assert all(e.final is not False for e in events)
    assert {d.headers[HEADER_REASON] for d in dead} == {"sender_unauthorized"}
    assert len(fake_ics.requests) >= 2  # asked again after each pause, then gave up
    refusals = [line for line in logs if "refused the sender's credentials" in line["event"]]
    assert len(refusals) == 1  # once per episode, not once per pause


async def test_an_episode_of_refused_credentials_ends_when_ics_accepts_again(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [status(401), status(401), accept_all]
    settings = worker_settings.model_copy(update={"sender_pause_s": 1.0})
    await pipeline.publish(request(1))
    with capture_logs() as logs:
        async with running_worker(settings):
            [event] = await pipeline.next_events(1, timeout_s=30)
    assert event.status is Status.SUBMITTED and event.attempt == 1
    said = [line["event"] for line in logs if "credentials" in line["event"]]
    assert said == ["ICS refused the sender's credentials; its messages wait, and fail "
                    "(sender_unauthorized) if still refused after the bound",
                    "ICS accepts the sender's credentials again"]


async def test_garbage_is_dead_lettered_and_the_worker_goes_on(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    await pipeline.publish_raw(b"\x00not json")
    await pipeline.publish_raw(orjson.dumps({"message_id": "bad1", "campaign_id": "c",
                                             "to": "12", "text": "x"}))
    await pipeline.publish(request(3))
    async with running_worker(worker_settings):
        events = {e.message_id: e for e in await pipeline.next_events(2)}
        dead = await pipeline.next_dead(2)
    assert events["bad1"].status is Status.REJECTED and "to:" in (events["bad1"].error or "")
    assert events["m3"].status is Status.SUBMITTED
    assert {d.headers[HEADER_REASON] for d in dead} == {"invalid_message"}


async def test_message_in_the_wrong_lane_moves_to_its_senders_lane(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    noon_ist = datetime(2026, 11, 27, 6, 30, tzinfo=UTC)
    await pipeline.publish(request(1, sender=PROMO.name), lane=Lane.SERVICE)
    async with running_worker(worker_settings, clock=fixed_clock(noon_ist)):
        [event] = await pipeline.next_events(1)
    assert event.status is Status.SUBMITTED and event.sender == "promo"
    assert fake_ics.records[0]["from"] == PROMO.sender_id


async def test_promotional_messages_wait_outside_the_window(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    night_ist = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)  # 22:30 in India
    await pipeline.publish(request(1, sender=PROMO.name), lane=Lane.PROMOTIONAL)
    await pipeline.publish(request(2))
    async with running_worker(worker_settings, clock=fixed_clock(night_ist)):
        [event] = await pipeline.next_events(1)
        assert event.message_id == "m2"
        depth = await pipeline.broker.queue_depth(pipeline.topology.send_queue(Lane.PROMOTIONAL))
        assert depth == 1
    assert [r["from"] for r in fake_ics.records] == [SERVICE.sender_id]


async def test_expired_messages_are_not_sent(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    await pipeline.publish(request(1, expires_at=past.isoformat()))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert event.status is Status.EXPIRED and dead.headers[HEADER_REASON] == "expired"
    assert fake_ics.requests == []
