"""The receiver over real HTTP with real RabbitMQ: what ICS sends, what analytics gets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from ics_sms.schemas.messages import Encoding, Status
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import InMemoryContextStore, MessageContext, RedisContextStore
from tests.callbacks.receiver_helpers import (
    ACME,
    TS,
    EventsQueue,
    Receiver,
    StartReceiver,
    delivered,
)

AT = datetime.fromtimestamp(TS, UTC)


def context(message_id: str) -> MessageContext:
    return MessageContext(message_id=message_id, campaign_id="spring-sale", sender="acme-otp",
                          metadata={"list": "vip", "n": 1}, segments=2, encoding=Encoding.GSM7,
                          urls=("https://shop.example/sale", "https://shop.example/"))


class TestJsonReceipts:
    async def test_each_group_kind_becomes_a_routed_complete_event(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        store = InMemoryContextStore()
        await store.put_many([context("m-1"), context("m-2"), context("m-3")])
        receiver = await start_receiver(store=store)
        status, answer = await receiver.post([
            {"event": "delivered", "data": [{"ts": TS, "meta": signer.sign("m-1", ACME)}]},
            {"event": "failed", "data": [{"ts": TS, "meta": signer.sign("m-2", ACME), "code": "906",
                                          "description": "Header blocked by DLT"}]},
            {"event": "clicked", "data": [{"ts": TS, "meta": signer.sign("m-3", ACME),
                                           "url": "https://shop.example/sale",
                                           "shortUrl": "https://ics.link/Ab3"}]},
        ])
        assert (status, answer) == (200, {"status": "success", "processed": 3,
                                          "unprocessed": []})
        taken = events_queue.take()
        assert [key for key, _ in taken] == ["sms.delivered", "sms.failed", "sms.clicked"]
        for (_key, event), message_id in zip(taken, ["m-1", "m-2", "m-3"], strict=True):
            assert event.message_id == message_id
            assert event.occurred_at == AT
            assert (event.campaign_id, event.sender, event.segments, event.encoding) == (
                "spring-sale", "acme-otp", 2, Encoding.GSM7)
            assert event.metadata == {"list": "vip", "n": 1}
        assert (taken[1][1].error_code, taken[1][1].error) == ("906", "Header blocked by DLT")
        assert taken[2][1].url == "https://shop.example/sale"

    async def test_replied_is_answered_and_publishes_nothing(
        self, receiver: Receiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        status, answer = await receiver.post(
            [{"event": "replied", "data": [{"ts": TS, "meta": signer.sign("m-1", ACME)}]}])
        assert (status, answer["status"], answer["processed"]) == (200, "success", 1)
        assert events_queue.take() == []

    async def test_partial_batch_publishes_the_good_and_lists_the_bad(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.post([{"event": "delivered", "data": [
            {"ts": TS, "meta": signer.sign("m-1", ACME)},
            {"meta": signer.sign("m-2", ACME)},
            "garbage",
            {"ts": TS, "meta": signer.sign("m-4", ACME)},
        ]}])
        assert status == 200
        assert answer["status"] == "partial"
        assert answer["processed"] == 2
        assert [(u["index"], u.get("meta")) for u in answer["unprocessed"]] == [
            (1, signer.sign("m-2", ACME)), (2, None)]
        assert all(u["reason"] for u in answer["unprocessed"])
        assert [e.message_id for e in events_queue.events()] == ["m-1", "m-4"]

    async def test_duplicate_receipts_give_the_same_event_id(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        body = delivered(signer.sign("m-1", ACME))
        assert (await receiver.post(body))[0] == 200
        assert (await receiver.post(body))[0] == 200
        first, second = events_queue.events()
        assert first.event_id == second.event_id
        assert first == second

    async def test_out_of_order_receipts_are_all_passed_on_with_their_own_time(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        store = InMemoryContextStore()
        await store.put_many([context("m-1")])
        receiver = await start_receiver(store=store)
        smsgid = signer.sign("m-1", ACME)
        await receiver.post([{"event": "clicked", "data": [
            {"ts": TS + 600, "meta": smsgid, "url": "https://shop.example/"}]}])
        await receiver.post(delivered(smsgid, ts=TS))
        click, delivery = events_queue.events()
        assert (click.status, click.occurred_at) == (Status.CLICKED,
                                                     datetime.fromtimestamp(TS + 600, UTC))
        assert (delivery.status, delivery.occurred_at) == (Status.DELIVERED, AT)


class TestOperatorReceipts:
    @pytest.mark.parametrize(("operator", "status"), [
        ("DELIVRD", Status.DELIVERED), ("UNDELIV", Status.FAILED),
        ("EXPIRED", Status.EXPIRED), ("REJECTD", Status.FAILED),
    ])
    async def test_get_query(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        operator: str, status: Status,
    ) -> None:
        receiver = await start_receiver()
        code, answer = await receiver.request("GET", params={
            "smsgid": signer.sign("m-1", ACME), "status": operator, "err": "901", "ts": str(TS)})
        assert (code, answer["processed"]) == (200, 1)
        ((key, event),) = events_queue.take()
        assert (key, event.status, event.occurred_at) == (status.routing_key, status, AT)

    async def test_form_post(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        code, answer = await receiver.request("POST", data={
            "smsgid": signer.sign("m-1", ACME), "status": "UNDELIV", "err": "914", "ts": str(TS)})
        assert (code, answer["status"]) == (200, "success")
        (event,) = events_queue.events()
        assert (event.status, event.error_code, event.error) == (Status.FAILED, "914",
                                                                 "UNDELIV")

    @pytest.mark.parametrize("operator", ["ACCEPTD", "ENROUTE"])
    async def test_intermediate_status_publishes_nothing(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        operator: str,
    ) -> None:
        receiver = await start_receiver()
        code, answer = await receiver.request("GET", params={
            "smsgid": signer.sign("m-1", ACME), "status": operator})
        assert (code, answer) == (200, {"status": "success", "processed": 1,
                                        "unprocessed": []})
        assert events_queue.take() == []


class TestRefusals:
    async def test_unknown_token_is_404_and_publishes_nothing(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)),
                                             path="/ics/not-a-known-token-at-all/receipts")
        assert (status, answer["reason"]) == (404, "unknown tracking URL")
        assert events_queue.take() == []

    async def test_forged_smsgid_is_refused(
        self, start_receiver: StartReceiver, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        forged = SmsgidSigner("someone-elses-secret").sign("m-1", ACME)
        status, answer = await receiver.post(delivered(forged))
        assert (status, answer["status"], answer["processed"]) == (403, "fail", 0)
        assert answer["reason"] == "receipts refused: not bound to this sender's messages"
        assert answer["unprocessed"] == [{"group": 0, "event": "delivered", "index": 0,
                                          "meta": forged, "reason": "invalid smsgid"}]
        assert events_queue.take() == []

    async def test_odd_smsgids_are_refused_one_by_one_never_a_server_error(
        self, start_receiver: StartReceiver, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        metas = ["msg-1.\u00e9", "m.\U0001f600\U0001f600", "", "x" * 500, "no-dot", "."]
        status, answer = await receiver.post(delivered(*metas))
        assert (status, answer["status"], answer["processed"]) == (403, "fail", 0)
        assert [u["index"] for u in answer["unprocessed"]] == list(range(len(metas)))
        assert events_queue.take() == []

    async def test_previous_secret_is_still_accepted(
        self, start_receiver: StartReceiver, amqp_settings: Settings, events_queue: EventsQueue
    ) -> None:
        rotated = amqp_settings.model_copy(update={
            "callback_secret": SecretStr("the-new-secret-of-at-least-32-bytes-long"),
            "callback_secret_previous": amqp_settings.callback_secret,
        })
        receiver = await start_receiver(rotated)
        old = SmsgidSigner(amqp_settings.callback_secret.get_secret_value()).sign("m-old", ACME)
        new = SmsgidSigner("the-new-secret-of-at-least-32-bytes-long").sign("m-new", ACME)
        status, answer = await receiver.post(delivered(old, new))
        assert (status, answer["processed"]) == (200, 2)
        assert sorted(e.message_id for e in events_queue.events()) == ["m-new", "m-old"]

    async def test_oversized_body_is_413(
        self, start_receiver: StartReceiver, amqp_settings: Settings, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        body = b"[" + b" " * amqp_settings.receiver_max_body_bytes + b"]"
        status, answer = await receiver.post(body)
        assert status == 413
        assert str(amqp_settings.receiver_max_body_bytes) in answer["reason"]
        assert events_queue.take() == []

    @pytest.mark.parametrize(("body", "reason"), [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"event": "delivered"}', "expected a JSON array of event groups"),
        (b"[1, 2]", "expected a JSON array of event groups"),
    ])
    async def test_malformed_body_is_400(
        self, start_receiver: StartReceiver, events_queue: EventsQueue, body: bytes,
        reason: str,
    ) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.post(body)
        assert status == 400
        assert reason in answer["reason"]
        assert events_queue.take() == []

    async def test_malformed_operator_receipt_is_400(self, start_receiver: StartReceiver) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.request("GET", params={"status": "DELIVRD"})
        assert (status, answer["reason"]) == (400, "operator receipt: smsgid: Field required")

    @pytest.mark.parametrize(("method", "path", "status"), [
        ("GET", "/nothing/here", 404), ("PUT", None, 405), ("DELETE", None, 405)])
    async def test_other_requests_get_json_errors(
        self, start_receiver: StartReceiver, method: str, path: str | None, status: int
    ) -> None:
        receiver = await start_receiver()
        code, answer = await receiver.request(method, path)
        assert (code, answer["status"]) == (status, "fail")


    async def test_a_bug_is_a_json_500_without_traceback(
        self, start_receiver: StartReceiver, signer: SmsgidSigner,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        receiver = await start_receiver()

        def broken(*_args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr("ics_sms.callbacks.service.event_fields", broken)
        status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
        assert (status, answer["reason"]) == (500, "internal error, send again later")


class TestContext:
    async def test_missing_context_still_publishes_what_is_known(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        assert (await receiver.post(delivered(signer.sign("m-1", ACME))))[0] == 200
        (event,) = events_queue.events()
        assert (event.message_id, event.sender, event.campaign_id, event.metadata) == (
            "m-1", "acme-otp", None, {})

    async def test_enrichment_from_redis(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        redis_url: str, redis_prefix: str,
    ) -> None:
        writer = RedisContextStore(redis_url, prefix=redis_prefix)
        await writer.put_many([context("m-1")])
        await writer.close()
        receiver = await start_receiver(store=RedisContextStore(redis_url, prefix=redis_prefix))
        await receiver.post(delivered(signer.sign("m-1", ACME), signer.sign("m-unknown", ACME)))
        known, unknown = events_queue.events()
        assert (known.campaign_id, known.metadata, known.segments) == (
            "spring-sale", {"list": "vip", "n": 1}, 2)
        assert (unknown.campaign_id, unknown.metadata) == (None, {})

    async def test_unreachable_redis_does_not_stop_receipts(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        store = RedisContextStore("redis://127.0.0.1:9/0", timeout_s=0.5)
        receiver = await start_receiver(store=store)
        status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
        assert (status, answer["processed"]) == (200, 1)
        (event,) = events_queue.events()
        assert (event.message_id, event.campaign_id) == ("m-1", None)


class TestProbes:
    async def test_healthz_and_readyz(self, start_receiver: StartReceiver) -> None:
        receiver = await start_receiver()
        assert await receiver.request("GET", "/healthz") == (200, {"status": "alive"})
        assert await receiver.request("GET", "/readyz") == (200, {"status": "ready"})
