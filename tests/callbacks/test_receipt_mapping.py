"""The mapping of ICS receipts to events, without broker or HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ics_sms.broker.codec import event_message, event_message_from_fields
from ics_sms.callbacks.receipts import (
    INVALID_SMSGID,
    NOT_SUBMITTED,
    OTHER_SENDER,
    UNBOUND_LEGACY,
    UNKNOWN_LINKS,
    URL_NOT_IN_MESSAGE,
    BodyError,
    Found,
    ParsedReceipts,
    Receipt,
    SmsgidCheck,
    bind,
    bind_found,
    event_fields,
    parse_groups,
    parse_operator,
    state_refusal,
    to_event,
)
from ics_sms.schemas.ics import OPERATOR_STATUS_MAP, OperatorStatus
from ics_sms.schemas.messages import Encoding, ReceiptEvent, Status
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import MessageContext
from ics_sms.stores.messages import State

TS = 1764230400
AT = datetime(2025, 11, 27, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
signer = SmsgidSigner("unit-secret")
CHECK = SmsgidCheck(signer, "acme-otp", others=["beta-otp"])
M1 = signer.sign("m-1", "acme-otp")
M2 = signer.sign("m-2", "acme-otp")


def groups(*items: tuple[str, list[Any]]) -> bytes:
    return orjson.dumps([{"event": event, "data": data} for event, data in items])


class TestJsonGroups:
    def test_delivered_failed_clicked_become_receipts(self) -> None:
        body = groups(
            ("delivered", [{"ts": TS, "meta": M1, "description": "Delivered to handset"}]),
            ("failed", [{"ts": TS, "meta": M2, "code": "906", "description": "Header blocked"}]),
            ("clicked", [{"ts": TS + 60, "meta": M1, "url": "https://shop.example/sale",
                          "shortUrl": "https://ics.link/Ab3"}]),
        )
        parsed = parse_groups(body, CHECK)
        assert parsed.receipts == [
            Receipt("m-1", Status.DELIVERED, AT, TS),
            Receipt("m-2", Status.FAILED, AT, TS, error_code="906", error="Header blocked"),
            Receipt("m-1", Status.CLICKED, datetime(2025, 11, 27, 8, 1, tzinfo=UTC), TS + 60,
                    url="https://shop.example/sale"),
        ]
        assert parsed.answer() == {"status": "success", "processed": 3, "unprocessed": []}

    def test_failed_without_description_gets_the_code_meaning(self) -> None:
        parsed = parse_groups(groups(("failed", [{"ts": TS, "meta": M1, "code": "901"}])),
                              CHECK)
        assert parsed.receipts[0].error == "DND"

    def test_clicked_with_only_the_short_url_keeps_it(self) -> None:
        record = {"ts": TS, "meta": M1, "shortUrl": "https://ics.link/x"}
        parsed = parse_groups(groups(("clicked", [record])), CHECK)
        assert parsed.receipts[0].url == "https://ics.link/x"

    def test_replied_is_processed_without_an_event(self) -> None:
        parsed = parse_groups(groups(("replied", [{"ts": TS, "meta": M1, "text": "STOP"}])),
                              CHECK)
        assert parsed.receipts == []
        assert parsed.answer() == {"status": "success", "processed": 1, "unprocessed": []}

    def test_a_single_group_object_is_tolerated(self) -> None:
        body = orjson.dumps({"event": "delivered", "data": [{"ts": TS, "meta": M1}]})
        assert len(parse_groups(body, CHECK).receipts) == 1

    def test_partial_batch_keeps_good_records_and_lists_bad_ones(self) -> None:
        body = groups(
            ("delivered", [{"ts": TS, "meta": M1}, {"meta": M2}, {"ts": TS, "meta": "m-3.bad"}]),
            ("failed", [{"ts": TS, "meta": M2}]),
            ("bounced", [{"ts": TS, "meta": M1}]),
        )
        parsed = parse_groups(body, CHECK)
        assert [r.message_id for r in parsed.receipts] == ["m-1"]
        assert parsed.answer() == {
            "status": "partial",
            "processed": 1,
            "unprocessed": [
                {"group": 0, "event": "delivered", "index": 1, "meta": M2,
                 "reason": "ts: Field required"},
                {"group": 0, "event": "delivered", "index": 2, "meta": "m-3.bad",
                 "reason": INVALID_SMSGID},
                {"group": 1, "event": "failed", "index": 0, "meta": M2,
                 "reason": "a failed receipt needs a code"},
                {"group": 2, "event": "bounced", "index": 0, "meta": M1,
                 "reason": "unknown event 'bounced'"},
            ],
        }

    def test_nothing_usable_is_a_fail(self) -> None:
        parsed = parse_groups(groups(("delivered", [{"ts": TS, "meta": "x.y"}])), CHECK)
        assert parsed.answer()["status"] == "fail"

    def test_records_that_are_not_objects_are_listed(self) -> None:
        parsed = parse_groups(groups(("delivered", [42, None])), CHECK)
        assert [u["index"] for u in parsed.unprocessed] == [0, 1]
        assert parsed.processed == 0

    def test_ts_out_of_range_is_refused(self) -> None:
        parsed = parse_groups(groups(("delivered", [{"ts": 10**15, "meta": M1}])), CHECK)
        assert "out of range" in parsed.unprocessed[0]["reason"]

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{not json", "not valid JSON"),
            (b"", "not valid JSON"),
            (b'"text"', "expected a JSON array of event groups"),
            (b'[{"data": []}]', "event: Field required"),
            (b'[{"event": "delivered", "data": 5}]', "data: Input should be a valid list"),
        ],
    )
    def test_unusable_bodies_raise_with_a_reason(self, body: bytes, reason: str) -> None:
        with pytest.raises(BodyError, match=reason):
            parse_groups(body, CHECK)


class TestOperatorReceipts:
    @pytest.mark.parametrize(("status", "expected"), list(OPERATOR_STATUS_MAP.items()))
    def test_every_operator_status_maps_as_documented(
        self, status: OperatorStatus, expected: str | None
    ) -> None:
        parsed = parse_operator({"smsgid": M1, "status": status.value, "err": "000",
                                 "ts": str(TS)}, CHECK, NOW)
        assert parsed.processed == 1
        assert [r.status.value for r in parsed.receipts] == ([expected] if expected else [])

    def test_failure_carries_operator_status_and_err(self) -> None:
        parsed = parse_operator({"smsgid": M1, "status": "undeliv", "err": "901",
                                 "ts": str(TS)}, CHECK, NOW)
        assert parsed.receipts == [Receipt("m-1", Status.FAILED, AT, TS, error_code="901",
                                           error="UNDELIV")]

    def test_delivery_has_no_error(self) -> None:
        parsed = parse_operator({"smsgid": M1, "status": "DELIVRD", "err": "000"}, CHECK, NOW)
        assert parsed.receipts == [Receipt("m-1", Status.DELIVERED, NOW)]

    def test_forged_smsgid_is_refused(self) -> None:
        forged = "m-1." + "A" * 11
        parsed = parse_operator({"smsgid": forged, "status": "DELIVRD"}, CHECK, NOW)
        assert parsed.answer() == {"status": "fail", "processed": 0, "unprocessed": [
            {"meta": forged, "reason": INVALID_SMSGID}]}

    @pytest.mark.parametrize("params", [{}, {"smsgid": M1}, {"smsgid": M1, "status": "GONE"},
                                        {"smsgid": M1, "status": "DELIVRD", "ts": "soon"}])
    def test_malformed_operator_receipts_raise(self, params: dict[str, str]) -> None:
        with pytest.raises(BodyError, match="operator receipt"):
            parse_operator(params, CHECK, NOW)


class TestEventIds:
    def test_the_same_receipt_twice_has_the_same_event_id(self) -> None:
        body = groups(("failed", [{"ts": TS, "meta": M1, "code": "906"}]))
        first, second = (parse_groups(body, CHECK).receipts[0] for _ in range(2))
        assert first.event_id == second.event_id

    @pytest.mark.parametrize("change", [{"ts": TS + 1}, {"code": "907"},
                                        {"description": "told again"}])
    def test_a_replay_with_a_new_ts_or_code_has_the_same_event_id(
        self, change: dict[str, Any]
    ) -> None:
        base = {"ts": TS, "meta": M1, "code": "906"}
        ids = {parse_groups(groups(("failed", [record])), CHECK).receipts[0].event_id
               for record in (base, {**base, **change})}
        assert len(ids) == 1

    def test_other_messages_and_statuses_have_other_event_ids(self) -> None:
        body = groups(("failed", [{"ts": TS, "meta": M1, "code": "906"},
                                  {"ts": TS, "meta": M2, "code": "906"}]),
                      ("delivered", [{"ts": TS, "meta": M1}]))
        assert len({r.event_id for r in parse_groups(body, CHECK).receipts}) == 3

    def test_clicks_are_one_event_per_message_and_link(self) -> None:
        def click(ts: int, url: str, meta: str = M1) -> Receipt:
            body = groups(("clicked", [{"ts": ts, "meta": meta, "url": url}]))
            return parse_groups(body, CHECK).receipts[0]

        first = click(TS, "https://shop.example/sale")
        assert click(TS + 99, "https://shop.example/sale").event_id == first.event_id
        assert click(TS, "HTTPS://Shop.Example/sale").event_id == first.event_id
        assert click(TS, "https://shop.example/other").event_id != first.event_id
        assert click(TS, "https://shop.example/sale", M2).event_id != first.event_id

    def test_json_and_operator_receipts_of_one_fact_share_the_id(self) -> None:
        operator = parse_operator({"smsgid": M1, "status": "DELIVRD", "ts": str(TS + 5)},
                                  CHECK, NOW).receipts[0]
        json = parse_groups(groups(("delivered", [{"ts": TS, "meta": M1}])), CHECK)
        assert operator.event_id == json.receipts[0].event_id

    def test_operator_receipt_without_ts_keeps_a_stable_id(self) -> None:
        params = {"smsgid": M1, "status": "DELIVRD"}
        first = parse_operator(params, CHECK, NOW).receipts[0]
        later = parse_operator(params, CHECK, datetime(2026, 2, 1, tzinfo=UTC)).receipts[0]
        assert first.event_id == later.event_id


def legacy_smsgid(message_id: str) -> str:
    """An smsgid as workers signed it before sender binding (MAC over the message id)."""
    mac = hmac.new(b"unit-secret", message_id.encode(), hashlib.sha256).digest()[:8]
    return f"{message_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def context(message_id: str = "m-1", sender: str = "acme-otp",
            urls: tuple[str, ...] | None = ("https://shop.example/sale",)) -> MessageContext:
    return MessageContext(message_id=message_id, campaign_id="spring", sender=sender,
                          urls=urls)


def clicked(url: str, meta: str = M1) -> bytes:
    return groups(("clicked", [{"ts": TS, "meta": meta, "url": url}]))


class TestSenderBinding:
    def test_another_senders_smsgid_is_refused_as_such(self) -> None:
        beta = signer.sign("m-1", "beta-otp")
        parsed = parse_groups(groups(("delivered", [{"ts": TS, "meta": beta}])), CHECK)
        assert parsed.receipts == []
        assert parsed.unprocessed == [{"group": 0, "event": "delivered", "index": 0,
                                       "meta": beta, "reason": OTHER_SENDER}]

    def test_an_unconfigured_senders_smsgid_is_simply_invalid(self) -> None:
        stranger = signer.sign("m-1", "gone-otp")
        parsed = parse_operator({"smsgid": stranger, "status": "DELIVRD"}, CHECK, NOW)
        assert [u["reason"] for u in parsed.unprocessed] == [INVALID_SMSGID]

    def test_a_legacy_smsgid_is_accepted_only_for_a_message_of_this_sender(self) -> None:
        body = groups(("delivered", [{"ts": TS, "meta": legacy_smsgid("m-1")},
                                     {"ts": TS, "meta": legacy_smsgid("m-2")},
                                     {"ts": TS, "meta": legacy_smsgid("m-3")}]))
        parsed = parse_groups(body, CHECK)
        assert all(r.legacy and r.needs_context for r in parsed.receipts)
        bind(parsed, "acme-otp", {"m-1": context("m-1"), "m-2": context("m-2", "beta-otp")})
        assert [r.message_id for r in parsed.receipts] == ["m-1"]
        assert [(u["index"], u["reason"]) for u in parsed.unprocessed] == [
            (1, OTHER_SENDER), (2, UNBOUND_LEGACY)]

    def test_legacy_smsgids_are_refused_when_not_accepted(self) -> None:
        check = SmsgidCheck(signer, "acme-otp", accept_legacy=False)
        parsed = parse_operator({"smsgid": legacy_smsgid("m-1"), "status": "DELIVRD"},
                                check, NOW)
        assert [u["reason"] for u in parsed.unprocessed] == [INVALID_SMSGID]

    def test_bound_delivery_receipts_need_no_context(self) -> None:
        parsed = parse_groups(groups(("delivered", [{"ts": TS, "meta": M1}])), CHECK)
        assert not parsed.receipts[0].needs_context
        bind(parsed, "acme-otp", {})
        assert len(parsed.receipts) == 1


class TestClickBinding:
    @pytest.mark.parametrize("url", ["https://shop.example/sale", "HTTPS://SHOP.example/sale",
                                     "https://shop.example/sale."])
    def test_a_link_of_the_message_is_accepted(self, url: str) -> None:
        parsed = parse_groups(clicked(url), CHECK)
        bind(parsed, "acme-otp", {"m-1": context()})
        assert [r.url for r in parsed.receipts] == [url]

    @pytest.mark.parametrize("url", ["https://phish.example/login",
                                     "https://shop.example/sale/../login",
                                     "https://shop.example/sale?x=1", "https://shop.example"])
    def test_a_url_the_message_did_not_contain_is_refused(self, url: str) -> None:
        parsed = parse_groups(clicked(url), CHECK)
        bind(parsed, "acme-otp", {"m-1": context()})
        assert parsed.receipts == []
        assert parsed.unprocessed == [{"group": 0, "event": "clicked", "index": 0,
                                       "meta": M1, "reason": URL_NOT_IN_MESSAGE}]

    def test_the_ics_short_url_alone_is_not_a_link_of_the_message(self) -> None:
        body = groups(("clicked", [{"ts": TS, "meta": M1, "shortUrl": "https://ics.link/x"}]))
        parsed = parse_groups(body, CHECK)
        bind(parsed, "acme-otp", {"m-1": context()})
        assert [u["reason"] for u in parsed.unprocessed] == [URL_NOT_IN_MESSAGE]

    @pytest.mark.parametrize("contexts", [{}, {"m-1": context(urls=None)}])
    def test_a_click_whose_message_links_are_unknown_is_refused(
        self, contexts: dict[str, MessageContext]
    ) -> None:
        parsed = parse_groups(clicked("https://shop.example/sale"), CHECK)
        bind(parsed, "acme-otp", contexts)
        assert [u["reason"] for u in parsed.unprocessed] == [UNKNOWN_LINKS]

    def test_a_message_without_links_has_no_click(self) -> None:
        parsed = parse_groups(clicked("https://shop.example/sale"), CHECK)
        bind(parsed, "acme-otp", {"m-1": context(urls=())})
        assert [u["reason"] for u in parsed.unprocessed] == [URL_NOT_IN_MESSAGE]


class TestProviderMessageId:
    def test_the_mid_of_a_receipt_is_carried_to_the_event(self) -> None:
        body = groups(("delivered", [{"ts": TS, "meta": M1, "mid": "ics-77"},
                                     {"ts": TS, "meta": M2, "mid": 12345}]))
        receipts = parse_groups(body, CHECK).receipts
        assert [r.provider_message_id for r in receipts] == ["ics-77", "12345"]
        assert to_event(receipts[0], "acme-otp", None).provider_message_id == "ics-77"

    def test_an_operator_receipt_mid_is_carried(self) -> None:
        parsed = parse_operator({"smsgid": M1, "status": "DELIVRD", "mid": "op-9"}, CHECK, NOW)
        assert parsed.receipts[0].provider_message_id == "op-9"

    @pytest.mark.parametrize("mid", [None, "", "x" * 101, {"a": 1}, True])
    def test_an_odd_mid_is_dropped_never_fatal(self, mid: object) -> None:
        parsed = parse_groups(groups(("delivered", [{"ts": TS, "meta": M1, "mid": mid}])),
                              CHECK)
        assert [r.provider_message_id for r in parsed.receipts] == [None]


class TestToEvent:
    receipt = Receipt("m-1", Status.FAILED, AT, TS, error_code="906", error="Header blocked")

    def test_context_completes_the_event(self) -> None:
        context = MessageContext(message_id="m-1", campaign_id="spring", sender="acme-otp",
                                 metadata={"list": "vip"}, segments=2, encoding=Encoding.UCS2)
        event = to_event(self.receipt, "acme-otp", context)
        assert event == ReceiptEvent(
            event_id=self.receipt.event_id, message_id="m-1", campaign_id="spring",
            status=Status.FAILED, occurred_at=AT, sender="acme-otp", error_code="906",
            error="Header blocked", segments=2, encoding=Encoding.UCS2,
            metadata={"list": "vip"},
        )

    def test_without_context_the_event_has_what_the_receipt_tells(self) -> None:
        event = to_event(self.receipt, "acme-otp", None)
        assert (event.campaign_id, event.metadata, event.segments, event.encoding) == (
            None, {}, None, None)
        assert (event.message_id, event.sender, event.error_code) == ("m-1", "acme-otp", "906")

    def test_the_encoded_event_reads_back_equal(self) -> None:
        event = to_event(self.receipt, "acme-otp", None)
        message = event_message(Topology(), event)
        assert message.routing_key == "sms.failed"
        assert message.message_id == event.event_id
        assert ReceiptEvent.model_validate_json(message.body) == event


    @pytest.mark.parametrize("status", [Status.FAILED, Status.DELIVERED, Status.CLICKED])
    def test_the_fast_event_is_the_models_event(self, status: Status) -> None:
        receipt = Receipt("m-1", status, AT, TS, provider_message_id="ics-1",
                          url="https://shop.example/sale" if status is Status.CLICKED
                          else None)
        context = MessageContext(message_id="m-1", campaign_id="spring", sender="acme-otp",
                                 metadata={"list": "vip", "n": [1, 2]}, segments=2,
                                 encoding=Encoding.UCS2)
        for known in (context, None):
            fields = event_fields(receipt, "acme-otp", known)
            message = event_message_from_fields(Topology(), status, fields)
            model = event_message(Topology(), to_event(receipt, "acme-otp", known))
            assert ReceiptEvent.model_validate_json(message.body) == \
                ReceiptEvent.model_validate_json(model.body)
            assert orjson.loads(message.body) == orjson.loads(model.body)
            assert (message.routing_key, message.message_id) == (
                model.routing_key, model.message_id)


class TestStateBinding:
    @pytest.mark.parametrize("state", [None, *State])
    def test_only_a_pending_record_refuses_a_receipt(self, state: State | None) -> None:
        assert state_refusal(state) == (NOT_SUBMITTED if state is State.PENDING else None)

    def test_the_state_is_checked_before_the_links_and_kept_receipts_carry_it(self) -> None:
        body = parse_groups(groups(("delivered", [{"ts": TS, "meta": M1}]),
                                   ("clicked", [{"ts": TS, "meta": M1, "url": "https://x/"}])),
                            CHECK)
        bind_found(body, "acme-otp", {"m-1": Found(State.PENDING, context())})
        assert [u["reason"] for u in body.unprocessed] == [NOT_SUBMITTED, NOT_SUBMITTED]
        body = parse_groups(groups(("delivered", [{"ts": TS, "meta": M1}])), CHECK)
        found = Found(State.SENDING, context(), "ics-9")
        bind_found(body, "acme-otp", {"m-1": found})
        assert [r.found for r in body.receipts] == [found]

    def test_state_only_leaves_the_links_to_bind(self) -> None:
        body = parse_groups(clicked("https://phish.example/"), CHECK)
        bind_found(body, "acme-otp", {"m-1": Found(State.SUBMITTED, context())},
                   state_only=True)
        assert body.unprocessed == [] and len(body.receipts) == 1


def test_an_empty_batch_is_a_success() -> None:
    assert ParsedReceipts().answer() == {"status": "success", "processed": 0, "unprocessed": []}
