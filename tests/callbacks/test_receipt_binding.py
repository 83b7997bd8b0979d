"""Receipts are bound to their message: over real HTTP with real RabbitMQ.

Two senders are configured (acme-otp, whose tracking URL the tests post to, and beta-otp).
A forged or cross-sender receipt is refused per record, counted by reason, logged without
the tracking token, and produces no event; a request with nothing but such receipts is a 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Sender, Senders, SenderType
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
