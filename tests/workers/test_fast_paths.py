"""The hot path's hand-built JSON stays exactly what the models describe."""

from __future__ import annotations

from datetime import UTC, datetime

from ics_sms.schemas.ics import DatasendRequest
from ics_sms.schemas.messages import Encoding, ReceiptEvent, SendRequest, Status
from ics_sms.schemas.topology import Topology
from ics_sms.workers.ics import IcsClient
from ics_sms.workers.outcomes import Outcomes

REQUEST = SendRequest(message_id="m-1", campaign_id="spring", to="+919812345678",
                      text="नमस्ते", dlt_template_id="1207161000000000000",
                      metadata={"list": "vip", "n": [1, 2]})


def test_event_fast_path_matches_the_receipt_event_model() -> None:
    now = datetime(2026, 11, 27, 9, 30, 1, 250000, tzinfo=UTC)
    message = Outcomes(Topology()).event(
        REQUEST, Status.SUBMITTED, now, sender="otp", attempt=2, provider_message_id="mid-9",
        segments=1, encoding=Encoding.UCS2)
    event = ReceiptEvent.model_validate_json(message.body)
    assert event.model_dump(exclude={"event_id"}) == {
        "schema_version": 1, "message_id": "m-1", "campaign_id": "spring",
        "status": Status.SUBMITTED, "occurred_at": now, "sender": "otp",
        "provider_message_id": "mid-9", "error_code": None, "error": None, "url": None,
        "click_count": None, "user_agent": None, "attempt": 2, "segments": 1,
        "encoding": Encoding.UCS2, "metadata": {"list": "vip", "n": [1, 2]},
        "final": None, "reason": None}
    assert message.message_id == event.event_id and message.routing_key == "sms.submitted"


def test_datasend_body_is_a_valid_datasend_request() -> None:
    records = [IcsClient.record(REQUEST.to, "ACMEIN", REQUEST.text, "m-1.mac", "1" * 19,
                                REQUEST.dlt_template_id),
               IcsClient.record("+447700900123", "ACMEIN", "hi", "m-2.mac", None, None)]
    batch = IcsClient.build("acme", records, dlrurl="https://h.example/ics/t/receipts",
                            urlshortening=True)
    request = DatasendRequest.model_validate_json(batch.body)
    assert request.urlshortening == 1 and request.dlrurl.endswith("/receipts")
    first, second = request.smstosend
    assert (first.to, first.from_, first.smsgid, first.templateid) == (
        "919812345678", "ACMEIN", "m-1.mac", "1207161000000000000")
    assert second.peid is None and second.to == "447700900123"
    assert batch.smsgids == ["m-1.mac", "m-2.mac"]
