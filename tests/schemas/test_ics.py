"""ICS wire shapes, as ICS_API.md describes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ics_sms.schemas.ics import (
    DATASEND_PATH,
    FAILURE_CODES,
    MAX_RECORDS_PER_REQUEST,
    OPERATOR_STATUS_MAP,
    DatasendRecord,
    DatasendRequest,
    OperatorReceipt,
    OperatorStatus,
    ReceiptData,
    datasend_response,
    receipt_groups,
)
from ics_sms.schemas.messages import Status

RECORD: dict[str, Any] = {
    "to": "919812345678", "from": "ACMEIN", "smstext": "Your OTP is 4821",
    "smsgid": "msg-1.AAAAAAAAAAA", "peid": "1201159100000000000",
    "templateid": "1207161000000000000",
}


def test_the_datasend_path() -> None:
    assert DATASEND_PATH == "/datasend"


def test_a_datasend_body_serialises_with_the_ics_field_names() -> None:
    request = DatasendRequest.model_validate(
        {"user": "acme", "urlshortening": 1, "dlrurl": "https://hooks.example.com/ics/t/receipts",
         "smstosend": [RECORD]}
    )
    body = json.loads(request.model_dump_json(by_alias=True))
    assert body["smstosend"][0] == RECORD
    assert body["allowunicode"] is True
    assert body["urlshortening"] == 1


@pytest.mark.parametrize("to", ["+919812345678", "0919812345678", "91981", "91 98123 45678"])
def test_record_numbers_are_country_code_and_number_without_plus(to: str) -> None:
    with pytest.raises(ValidationError):
        DatasendRecord.model_validate({**RECORD, "to": to})


def test_a_request_holds_one_to_a_thousand_records() -> None:
    base = {"user": "acme"}
    with pytest.raises(ValidationError):
        DatasendRequest.model_validate({**base, "smstosend": []})
    with pytest.raises(ValidationError):
        DatasendRequest.model_validate(
            {**base, "smstosend": [RECORD] * (MAX_RECORDS_PER_REQUEST + 1)}
        )
    full = DatasendRequest.model_validate({**base, "smstosend": [RECORD] * 1000})
    assert len(full.smstosend) == MAX_RECORDS_PER_REQUEST == 1000


def test_the_datasend_response_tells_accepted_from_refused_records() -> None:
    results = datasend_response.validate_json(json.dumps([
        {"to": "919812345678", "from": "ACMEIN", "mid": "ics-1", "smsgid": "a.x"},
        {"to": "919812345679", "smsgid": "b.x", "Error": "Invalid template"},
        {"to": "919812345670", "smsgid": "c.x", "mid": "ics-3", "future": "ignored"},
    ]))
    assert [r.accepted for r in results] == [True, False, True]
    assert results[1].error == "Invalid template"
    assert results[0].mid == "ics-1"


def test_receipts_parse_several_groups_and_ignore_extra_keys() -> None:
    groups = receipt_groups.validate_json(json.dumps([
        {"event": "delivered", "data": [{"ts": 1764230400, "meta": "a.x",
                                         "description": "Delivered to handset"}]},
        {"event": "failed", "data": [{"ts": 1764230400, "meta": "b.x", "code": "906",
                                      "description": "Header blocked by DLT"}],
         "account": "ignored"},
        {"event": "clicked", "data": [{"ts": 1764230460, "meta": "c.x",
                                       "url": "https://shop.example/sale",
                                       "shortUrl": "https://ics.link/Ab3"}]},
    ]))
    assert [g.event for g in groups] == ["delivered", "failed", "clicked"]
    click = ReceiptData.model_validate(groups[2].data[0])
    assert click.short_url == "https://ics.link/Ab3"
    assert click.url == "https://shop.example/sale"


@pytest.mark.parametrize(
    "data", [{"ts": -1, "meta": "a"}, {"ts": 1, "meta": ""}, {"meta": "a"}, {"ts": 1}]
)
def test_invalid_receipt_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReceiptData.model_validate(data)


def test_every_operator_status_is_mapped_as_documented() -> None:
    assert set(OPERATOR_STATUS_MAP) == set(OperatorStatus)
    assert OPERATOR_STATUS_MAP[OperatorStatus.DELIVRD] == Status.DELIVERED
    assert OPERATOR_STATUS_MAP[OperatorStatus.EXPIRED] == Status.EXPIRED
    assert OPERATOR_STATUS_MAP[OperatorStatus.ACCEPTD] is None
    assert OPERATOR_STATUS_MAP[OperatorStatus.ENROUTE] is None
    for status in ("UNDELIV", "REJECTD", "DELETED", "UNKNOWN"):
        assert OPERATOR_STATUS_MAP[OperatorStatus(status)] == Status.FAILED
    mapped = {s for s in OPERATOR_STATUS_MAP.values() if s is not None}
    assert mapped <= {s.value for s in Status}


def test_operator_receipts_refuse_unknown_statuses() -> None:
    assert OperatorReceipt.model_validate({"smsgid": "a.x", "status": "DELIVRD"}).err is None
    with pytest.raises(ValidationError):
        OperatorReceipt.model_validate({"smsgid": "a.x", "status": "delivered"})


def test_the_failure_code_table_is_complete() -> None:
    assert set(FAILURE_CODES) == {str(c) for c in range(900, 921) if c != 911}
    assert FAILURE_CODES["901"] == "DND"
    assert FAILURE_CODES["906"] == "header blocked by DLT"
