"""Receipts are bound to their message: over real HTTP with real RabbitMQ.

Two senders are configured (acme-otp, whose tracking URL the tests post to, and beta-otp).
A forged or cross-sender receipt is refused per record, counted by reason, logged without
the tracking token, and produces no event; a request with nothing but such receipts is a 403.
Receipts are also checked against the state of their message's record (real Redis over
HTTP; :class:`TestServiceBinding` drives ``ReceiptService.bind`` with the in-memory store).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import orjson
import pytest
from prometheus_client import REGISTRY
from redis import Redis

from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.receipts import (
    FORGERIES,
    NOT_SUBMITTED,
    URL_NOT_IN_MESSAGE,
    ParsedReceipts,
    SmsgidCheck,
    parse_groups,
)
from ics_sms.callbacks.service import ReceiptService
from ics_sms.schemas.messages import SendRequest, Status
from ics_sms.schemas.senders import Sender, Senders, SenderType
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import (
    ContextStore,
    ContextStoreError,
    InMemoryContextStore,
    MessageContext,
    RedisContextStore,
)
from ics_sms.stores.messages import (
    Claim,
    InMemoryMessageStore,
    MessageRecord,
    MessageStore,
    MessageStoreError,
    RedisMessageStore,
    State,
    Transition,
    open_message_store,
)
from tests.callbacks.receiver_helpers import (
    ACME,
    TS,
    EventsQueue,
    Receiver,
    StartReceiver,
    delivered,
)
from tests.callbacks.test_service import Publisher

BETA = "beta-otp"
SALE = "https://shop.example.in/sale?i=7"
FORGED_REASON = "receipts refused: not bound to this sender's messages"


@pytest.fixture
def senders(sender: Sender) -> Senders:
    beta = Sender(name=BETA, type=SenderType.SERVICE_IMPLICIT, sender_id="BETAIN",
                  username="beta", token="not-a-real-ics-token-either")
    return Senders().add(sender).add(beta)


def refusals(kind: str) -> float:
    value = REGISTRY.get_sample_value("ics_sms_receipts_refused_total", {"reason": kind})
    return value or 0.0


def context(message_id: str, sender: str = ACME, text: str = f"20% off today {SALE}"
            ) -> MessageContext:
    """A context as the worker writes it: its links come from the request text."""
    request = SendRequest(message_id=message_id, campaign_id="spring", to="+447700900123",
                          text=text)
    return MessageContext.for_request(request, sender=sender)


def clicked(meta: str, url: str, ts: int = TS) -> list[dict[str, Any]]:
    return [{"event": "clicked", "data": [{"ts": ts, "meta": meta, "url": url}]}]


async def receiver_with(start_receiver: StartReceiver, *contexts: MessageContext) -> Receiver:
    store = InMemoryContextStore()
    await store.put_many(list(contexts))
    return await start_receiver(store=store)


class TestCrossSender:
    async def test_betas_smsgid_on_acmes_url_is_refused_counted_and_logged(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        receiver = await start_receiver()
        beta = signer.sign("m-1", BETA)
        before = refusals("other_sender")
        status, answer = await receiver.post(delivered(beta))
        assert (status, answer["reason"], answer["processed"]) == (403, FORGED_REASON, 0)
        assert answer["unprocessed"] == [{"group": 0, "event": "delivered", "index": 0,
                                          "meta": beta, "reason": "smsgid of another sender"}]
        assert refusals("other_sender") == before + 1
        assert events_queue.take() == []
        logged = capsys.readouterr().out
        assert "receipts refused" in logged and "other_sender" in logged
        assert receiver.tracking_path.split("/")[2] not in logged

    async def test_a_forged_receipt_does_not_sink_the_genuine_ones(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.post(delivered(
            signer.sign("m-1", ACME), signer.sign("m-2", BETA),
            SmsgidSigner("not-our-secret-at-all").sign("m-3", ACME)))
        assert (status, answer["status"], answer["processed"]) == (200, "partial", 1)
        assert [u["reason"] for u in answer["unprocessed"]] == [
            "smsgid of another sender", "invalid smsgid"]
        assert [e.message_id for e in events_queue.events()] == ["m-1"]

    async def test_a_legacy_smsgid_needs_a_context_of_this_sender(
        self, start_receiver: StartReceiver, amqp_settings: Settings, events_queue: EventsQueue
    ) -> None:
        secret = amqp_settings.callback_secret.get_secret_value().encode()

        def legacy(message_id: str) -> str:
            mac = hmac.new(secret, message_id.encode(), hashlib.sha256).digest()[:8]
            return f"{message_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

        receiver = await receiver_with(start_receiver, context("m-1"), context("m-2", BETA))
        status, answer = await receiver.post(delivered(legacy("m-1"), legacy("m-2"),
                                                       legacy("m-3")))
        assert (status, answer["processed"]) == (200, 1)
        assert [u["reason"] for u in answer["unprocessed"]] == [
            "smsgid of another sender",
            "smsgid without sender binding and no record of its sender"]
        ((key, event),) = events_queue.take()
        assert (key, event.message_id, event.sender) == ("sms.delivered", "m-1", ACME)


class TestClicks:
    async def test_a_click_on_a_link_of_the_message_is_published(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await receiver_with(start_receiver, context("m-1"))
        status, answer = await receiver.post(clicked(signer.sign("m-1", ACME), SALE))
        assert (status, answer["status"]) == (200, "success")
        (event,) = events_queue.events()
        assert (event.status, event.url) == ("clicked", SALE)

    async def test_a_forged_click_url_is_refused(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await receiver_with(start_receiver, context("m-1"))
        before = refusals("url_not_in_message")
        status, answer = await receiver.post(clicked(signer.sign("m-1", ACME),
                                                     "https://phish.example/login"))
        assert (status, answer["reason"]) == (403, FORGED_REASON)
        assert answer["unprocessed"][0]["reason"] == "clicked url is not a link of this message"
        assert refusals("url_not_in_message") == before + 1
        assert events_queue.take() == []

    async def test_a_click_without_context_is_refused_but_not_as_a_forgery(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        status, answer = await receiver.post(clicked(signer.sign("m-1", ACME), SALE))
        assert (status, answer["status"]) == (200, "fail")
        assert answer["unprocessed"][0]["reason"].startswith("clicked url cannot be checked")
        assert events_queue.take() == []

    async def test_unreadable_contexts_are_a_503_so_ics_sends_again(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        store = RedisContextStore("redis://127.0.0.1:9/0", timeout_s=0.5)
        receiver = await start_receiver(store=store)
        status, _answer = await receiver.post(clicked(signer.sign("m-1", ACME), SALE))
        assert status == 503
        assert events_queue.take() == []


class TestEventIds:
    async def test_a_replay_with_a_new_ts_gives_the_same_event_id(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await receiver_with(start_receiver, context("m-1"))
        smsgid = signer.sign("m-1", ACME)
        for ts in (TS, TS + 3600):
            assert (await receiver.post(delivered(smsgid, ts=ts)))[0] == 200
            assert (await receiver.post(clicked(smsgid, SALE, ts)))[0] == 200
        first_delivery, first_click, replayed_delivery, replayed_click = events_queue.events()
        assert replayed_delivery.event_id == first_delivery.event_id
        assert replayed_click.event_id == first_click.event_id
        assert first_click.event_id != first_delivery.event_id


class TestProviderMessageId:
    async def test_the_receipts_mid_is_carried(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue
    ) -> None:
        receiver = await start_receiver()
        status, _ = await receiver.post([{"event": "failed", "data": [
            {"ts": TS, "meta": signer.sign("m-1", ACME), "code": "914", "mid": "ics-4711"}]}])
        assert status == 200
        (event,) = events_queue.events()
        assert (event.provider_message_id, event.error_code) == ("ics-4711", "914")


# -- the state of the message's record ---------------------------------------------------


def failed(smsgid: str, code: str = "914") -> list[dict[str, Any]]:
    return [{"event": "failed", "data": [{"ts": TS, "meta": smsgid, "code": code}]}]


async def claimed(store: MessageStore, *message_ids: str, to: State | None = None) -> None:
    """Records as a worker leaves them: claimed (``sending``), then moved to ``to``."""
    await store.claim([Claim(m, "fp", 1, context(m)) for m in message_ids])
    if to is not None:
        await store.apply([Transition(m, to) for m in message_ids])


@pytest.fixture
async def records(amqp_settings: Settings, redis_url: str) -> AsyncIterator[MessageStore]:
    """The message store the receiver of ``amqp_settings`` uses (Redis, the test's
    namespace); the keys of ``m-1`` are deleted afterwards."""
    store = open_message_store(amqp_settings)
    assert isinstance(store, RedisMessageStore)
    yield store
    await store.close()
    client = Redis.from_url(redis_url)  # the keys these tests write (no SCAN: the db is big)
    prefix = f"ics-sms:{amqp_settings.namespace}msg:"
    client.delete(prefix + "m-1", prefix + "~deadlines")
    client.close()


class TestRecordState:
    async def test_a_receipt_for_a_released_message_is_refused_counted_and_not_an_event(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        records: MessageStore,
    ) -> None:
        await claimed(records, "m-1", to=State.PENDING)
        receiver = await start_receiver()
        before = refusals("not_submitted")
        status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
        assert (status, answer["processed"]) == (403, 0)
        assert refusals("not_submitted") == before + 1
        assert events_queue.take() == []
        assert (await records.read(["m-1"]))["m-1"].state is State.PENDING

    async def test_a_receipt_for_a_message_still_sending_is_its_final(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        records: MessageStore,
    ) -> None:
        await claimed(records, "m-1")  # ICS was slower to answer than the handset
        receiver = await start_receiver()
        status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
        assert (status, answer["status"]) == (200, "success")
        (event,) = events_queue.events()
        assert (event.status, event.final, event.campaign_id) == ("delivered", None, "spring")
        assert (await records.read(["m-1"]))["m-1"].state is State.DELIVERED

    async def test_a_replayed_receipt_has_the_same_event_id_and_is_no_second_final(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        records: MessageStore,
    ) -> None:
        await claimed(records, "m-1", to=State.SUBMITTED)
        receiver = await start_receiver()
        for _ in range(2):
            assert (await receiver.post(failed(signer.sign("m-1", ACME))))[0] == 200
        first, replay = events_queue.events()
        assert replay.event_id == first.event_id  # one fact: consumers drop the replay
        assert (first.final, replay.final) == (None, None)
        assert (await records.read(["m-1"]))["m-1"].state is State.FAILED

    async def test_a_receipt_after_another_final_is_not_final_and_says_which(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        records: MessageStore,
    ) -> None:
        await claimed(records, "m-1", to=State.UNCERTAIN)
        receiver = await start_receiver()
        smsgid = signer.sign("m-1", ACME)
        assert (await receiver.post(delivered(smsgid)))[0] == 200
        assert (await receiver.post(failed(smsgid)))[0] == 200
        first, second = events_queue.events()
        assert (first.status, first.final, first.reason) == ("delivered", None, None)
        assert (second.status, second.final) == ("failed", False)
        assert second.reason == "the message's final status is delivered"
        assert (await records.read(["m-1"]))["m-1"].state is State.DELIVERED

    async def test_a_receipt_without_a_record_is_accepted(
        self, start_receiver: StartReceiver, signer: SmsgidSigner, events_queue: EventsQueue,
        records: MessageStore,
    ) -> None:
        receiver = await start_receiver()  # e.g. Redis lost its data: the MAC still binds
        status, _answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
        assert status == 200
        assert [e.message_id for e in events_queue.events()] == ["m-1"]
        assert (await records.read(["m-1"]))["m-1"].state is State.DELIVERED


class Unreadable(InMemoryContextStore):
    """A context store that must not be needed (or that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_many(self, message_ids: Iterable[str]) -> dict[str, MessageContext]:
        self.reads += 1
        raise ContextStoreError("context store down")


def bound_service(messages: MessageStore | None, publisher: Publisher,
                  contexts: ContextStore | None = None) -> ReceiptService:
    return ReceiptService(Topology(), contexts or InMemoryContextStore(),
                          cast(ConfirmingPublisher, cast(Any, publisher)), messages)


SIGNER = SmsgidSigner("unit-secret-of-the-binding-tests")


def parsed(*groups: list[dict[str, Any]]) -> ParsedReceipts:
    return parse_groups(orjson.dumps([g for group in groups for g in group]),
                        SmsgidCheck(SIGNER, ACME, [BETA]))


class Down(InMemoryMessageStore):
    async def read(self, message_ids: Iterable[str]) -> dict[str, MessageRecord]:
        raise MessageStoreError("message store down")


class TestServiceBinding:
    """``ReceiptService.bind``: one record read per request, refusals listed in the answer."""

    async def test_pending_is_refused_as_a_forgery_and_publishes_nothing(self) -> None:
        messages, publisher = InMemoryMessageStore(), Publisher()
        await claimed(messages, "m-1", to=State.PENDING)
        await claimed(messages, "m-2")
        service = bound_service(messages, publisher)
        body = parsed(delivered(SIGNER.sign("m-1", ACME), SIGNER.sign("m-2", ACME)))
        await service.bind(body, ACME)
        await service.publish(ACME, body.receipts)
        assert [(u["index"], u["reason"]) for u in body.answer()["unprocessed"]] == [
            (0, NOT_SUBMITTED)]
        assert NOT_SUBMITTED in FORGERIES  # alone in a request: answered 403
        assert [e.message_id for e in publisher.events] == ["m-2"]

    async def test_the_record_alone_checks_a_click_in_one_read(self) -> None:
        messages, publisher, contexts = InMemoryMessageStore(), Publisher(), Unreadable()
        await claimed(messages, "m-1", "m-2", to=State.SUBMITTED)
        service = bound_service(messages, publisher, contexts)
        body = parsed(clicked(SIGNER.sign("m-1", ACME), SALE),
                      clicked(SIGNER.sign("m-2", ACME), "https://phish.example/login"))
        await service.bind(body, ACME)
        await service.publish(ACME, body.receipts)
        assert [u["reason"] for u in body.answer()["unprocessed"]] == [URL_NOT_IN_MESSAGE]
        (event,) = publisher.events
        assert (event.message_id, event.url, event.campaign_id) == ("m-1", SALE, "spring")
        assert contexts.reads == 0  # the records held the contexts

    async def test_without_the_stores_a_click_is_a_503_and_a_delivery_goes_out(self) -> None:
        publisher = Publisher()
        service = bound_service(Down(), publisher, Unreadable())
        with pytest.raises(ContextStoreError):
            await service.bind(parsed(clicked(SIGNER.sign("m-1", ACME), SALE)), ACME)
        body = parsed(delivered(SIGNER.sign("m-1", ACME)))
        await service.bind(body, ACME)
        await service.publish(ACME, body.receipts)
        assert [(e.status, e.campaign_id) for e in publisher.events] == [
            (Status.DELIVERED, None)]

    async def test_without_records_the_context_store_stands_in_for_a_click(self) -> None:
        publisher, contexts = Publisher(), InMemoryContextStore()
        await contexts.put_many([context("m-1")])
        service = bound_service(Down(), publisher, contexts)
        body = parsed(clicked(SIGNER.sign("m-1", ACME), SALE))
        await service.bind(body, ACME)
        await service.publish(ACME, body.receipts)
        assert [(e.status, e.url) for e in publisher.events] == [(Status.CLICKED, SALE)]

    async def test_a_message_without_record_is_accepted_and_counted(self) -> None:
        publisher = Publisher()
        contexts = InMemoryContextStore()
        await contexts.put_many([context("m-1")])  # an older worker's context
        service = bound_service(InMemoryMessageStore(), publisher, contexts)
        body = parsed(delivered(SIGNER.sign("m-1", ACME)))
        await service.bind(body, ACME)
        await service.publish(ACME, body.receipts)
        assert (service.without_record, publisher.events[0].campaign_id) == (1, "spring")
