"""The mapping of ICS receipts to events, without broker or HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ics_sms.broker.codec import event_message
from ics_sms.callbacks.receipts import (
    INVALID_SMSGID,
    BodyError,
    ParsedReceipts,
    Receipt,
    parse_groups,
    parse_operator,
    to_event,
)
from ics_sms.schemas.ics import OPERATOR_STATUS_MAP, OperatorStatus
from ics_sms.schemas.messages import Encoding, ReceiptEvent, Status
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import MessageContext

TS = 1764230400
AT = datetime(2025, 11, 27, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
signer = SmsgidSigner("unit-secret")
M1 = signer.sign("m-1")
M2 = signer.sign("m-2")


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
        parsed = parse_groups(body, signer)
        assert parsed.receipts == [
            Receipt("m-1", Status.DELIVERED, AT, TS),
            Receipt("m-2", Status.FAILED, AT, TS, error_code="906", error="Header blocked"),
            Receipt("m-1", Status.CLICKED, datetime(2025, 11, 27, 8, 1, tzinfo=UTC), TS + 60,
                    url="https://shop.example/sale"),
        ]
        assert parsed.answer() == {"status": "success", "processed": 3, "unprocessed": []}

    def test_failed_without_description_gets_the_code_meaning(self) -> None:
        parsed = parse_groups(groups(("failed", [{"ts": TS, "meta": M1, "code": "901"}])),
                              signer)
        assert parsed.receipts[0].error == "DND"

    def test_clicked_with_only_the_short_url_keeps_it(self) -> None:
        record = {"ts": TS, "meta": M1, "shortUrl": "https://ics.link/x"}
        parsed = parse_groups(groups(("clicked", [record])), signer)
        assert parsed.receipts[0].url == "https://ics.link/x"

    def test_replied_is_processed_without_an_event(self) -> None:
        parsed = parse_groups(groups(("replied", [{"ts": TS, "meta": M1, "text": "STOP"}])),
                              signer)
        assert parsed.receipts == []
        assert parsed.answer() == {"status": "success", "processed": 1, "unprocessed": []}

    def test_a_single_group_object_is_tolerated(self) -> None:
        body = orjson.dumps({"event": "delivered", "data": [{"ts": TS, "meta": M1}]})
        assert len(parse_groups(body, signer).receipts) == 1

    def test_partial_batch_keeps_good_records_and_lists_bad_ones(self) -> None:
        body = groups(
            ("delivered", [{"ts": TS, "meta": M1}, {"meta": M2}, {"ts": TS, "meta": "m-3.bad"}]),
            ("failed", [{"ts": TS, "meta": M2}]),
            ("bounced", [{"ts": TS, "meta": M1}]),
        )
        parsed = parse_groups(body, signer)
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
        parsed = parse_groups(groups(("delivered", [{"ts": TS, "meta": "x.y"}])), signer)
        assert parsed.answer()["status"] == "fail"

    def test_records_that_are_not_objects_are_listed(self) -> None:
        parsed = parse_groups(groups(("delivered", [42, None])), signer)
        assert [u["index"] for u in parsed.unprocessed] == [0, 1]
        assert parsed.processed == 0

    def test_ts_out_of_range_is_refused(self) -> None:
        parsed = parse_groups(groups(("delivered", [{"ts": 10**15, "meta": M1}])), signer)
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
            parse_groups(body, signer)


class TestOperatorReceipts:
    @pytest.mark.parametrize(("status", "expected"), list(OPERATOR_STATUS_MAP.items()))
    def test_every_operator_status_maps_as_documented(
        self, status: OperatorStatus, expected: str | None
    ) -> None:
        parsed = parse_operator({"smsgid": M1, "status": status.value, "err": "000",
                                 "ts": str(TS)}, signer, NOW)
        assert parsed.processed == 1
        assert [r.status.value for r in parsed.receipts] == ([expected] if expected else [])

    def test_failure_carries_operator_status_and_err(self) -> None:
        parsed = parse_operator({"smsgid": M1, "status": "undeliv", "err": "901",
                                 "ts": str(TS)}, signer, NOW)
        assert parsed.receipts == [Receipt("m-1", Status.FAILED, AT, TS, error_code="901",
                                           error="UNDELIV")]

    def test_delivery_has_no_error(self) -> None:
        parsed = parse_operator({"smsgid": M1, "status": "DELIVRD", "err": "000"}, signer, NOW)
        assert parsed.receipts == [Receipt("m-1", Status.DELIVERED, NOW)]

    def test_forged_smsgid_is_refused(self) -> None:
        forged = "m-1." + "A" * 11
        parsed = parse_operator({"smsgid": forged, "status": "DELIVRD"}, signer, NOW)
        assert parsed.answer() == {"status": "fail", "processed": 0, "unprocessed": [
            {"meta": forged, "reason": INVALID_SMSGID}]}

    @pytest.mark.parametrize("params", [{}, {"smsgid": M1}, {"smsgid": M1, "status": "GONE"},
                                        {"smsgid": M1, "status": "DELIVRD", "ts": "soon"}])
    def test_malformed_operator_receipts_raise(self, params: dict[str, str]) -> None:
        with pytest.raises(BodyError, match="operator receipt"):
            parse_operator(params, signer, NOW)


class TestEventIds:
    def test_the_same_receipt_twice_has_the_same_event_id(self) -> None:
        body = groups(("failed", [{"ts": TS, "meta": M1, "code": "906"}]))
        first, second = (parse_groups(body, signer).receipts[0] for _ in range(2))
        assert first.event_id == second.event_id

    @pytest.mark.parametrize("change", [{"ts": TS + 1}, {"code": "907"}, {"meta": M2}])
    def test_different_receipts_have_different_event_ids(self, change: dict[str, Any]) -> None:
        base = {"ts": TS, "meta": M1, "code": "906"}
        ids = {parse_groups(groups(("failed", [record])), signer).receipts[0].event_id
               for record in (base, {**base, **change})}
        assert len(ids) == 2

    def test_operator_receipt_without_ts_keeps_a_stable_id(self) -> None:
        params = {"smsgid": M1, "status": "DELIVRD"}
        first = parse_operator(params, signer, NOW).receipts[0]
        later = parse_operator(params, signer, datetime(2026, 2, 1, tzinfo=UTC)).receipts[0]
        assert first.event_id == later.event_id


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


def test_an_empty_batch_is_a_success() -> None:
    assert ParsedReceipts().answer() == {"status": "success", "processed": 0, "unprocessed": []}
