"""The wire contract: what a campaign engine publishes and what analytics reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import (
    MAX_METADATA_BYTES,
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    TERMINAL_STATUSES,
    Encoding,
    ReceiptEvent,
    SendRequest,
    Status,
    make_event_id,
)

VALID: dict[str, Any] = {
    "message_id": "msg-0001",
    "campaign_id": "diwali-2025",
    "to": "+919812345678",
    "text": "Your OTP is 4821",
}


def send_request(**changes: Any) -> SendRequest:
    return SendRequest.model_validate({**VALID, **changes})


def problems(**changes: Any) -> list[str]:
    """The ``field: reason`` lines for a send request with ``changes`` applied."""
    with pytest.raises(ValidationError) as caught:
        send_request(**changes)
    return describe(caught.value)


# -- SendRequest: what is accepted ----------------------------------------------------------


def test_a_minimal_send_request_gets_the_defaults() -> None:
    request = send_request()
    assert request.schema_version == SCHEMA_VERSION == 1
    assert request.sender is None
    assert request.dlt_template_id is None
    assert request.expires_at is None
    assert request.metadata == {}


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("+919812345678", "+919812345678"),
        ("+91 98123 45678", "+919812345678"),
        ("+91-98123-45678", "+919812345678"),
        ("00919812345678", "+919812345678"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+1 (650) 253-0000", "+16502530000"),
    ],
)
def test_to_is_normalised_to_e164(written: str, e164: str) -> None:
    assert send_request(to=written).to == e164


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    request = send_request(priority="high", added_in_v2={"x": 1})
    assert request == send_request()
    assert "priority" not in request.model_dump()


def test_a_full_send_request_round_trips_through_json() -> None:
    request = send_request(
        sender="acme-otp",
        dlt_template_id="1207161000000000000",
        expires_at="2030-01-01T10:00:00+05:30",
        metadata={"customer": 42, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
    )
    assert SendRequest.model_validate_json(request.model_dump_json()) == request


def test_text_may_be_exactly_the_maximum_length() -> None:
    assert len(send_request(text="x" * MAX_TEXT_CHARS).text) == MAX_TEXT_CHARS


def test_message_ids_may_use_letters_digits_and_dot_colon_dash_underscore() -> None:
    assert send_request(message_id="A9._:-z").message_id == "A9._:-z"


@pytest.mark.parametrize(
    "expires_at",
    [
        "2030-01-01T00:00:00Z",
        "2030-01-01T05:30:00+05:30",
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2030, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_expires_at_accepts_timezone_aware_instants(expires_at: object) -> None:
    assert send_request(expires_at=expires_at).expires_at == datetime(2030, 1, 1, tzinfo=UTC)


def test_expired_compares_instants_not_wall_clocks() -> None:
    request = send_request(expires_at="2030-01-01T05:30:00+05:30")  # = 00:00 UTC
    assert not request.expired(datetime(2029, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert request.expired(datetime(2030, 1, 1, tzinfo=UTC))
    assert not send_request().expired(datetime(2999, 1, 1, tzinfo=UTC))


def test_send_requests_are_immutable() -> None:
    request = send_request()
    with pytest.raises(ValidationError):
        request.text = "changed"  # type: ignore[misc]


# -- SendRequest: what is refused, and how it is explained ---------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"to": "9812345678"}, "to", "leading + and country code"),
        ({"to": "+91 98123"}, "to", "not a possible phone number"),
        ({"to": "+91abcdefghij"}, "to", "only digits"),
        ({"to": "call me"}, "to", "leading +"),
        ({"to": 919812345678}, "to", "valid string"),
        ({"text": ""}, "text", "empty"),
        ({"text": " \n\t "}, "text", "white space"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "text", f"at most {MAX_TEXT_CHARS} characters"),
        ({"text": 42}, "text", "valid string"),
        ({"text": None}, "text", "valid string"),
        ({"message_id": ""}, "message_id", "at least 1 character"),
        ({"message_id": "has space"}, "message_id", "pattern"),
        ({"message_id": "-leading-dash"}, "message_id", "pattern"),
        ({"message_id": "m" * 65}, "message_id", "at most 64 characters"),
        ({"message_id": 7}, "message_id", "valid string"),
        ({"campaign_id": ""}, "campaign_id", "at least 1 character"),
        ({"campaign_id": "c" * 129}, "campaign_id", "at most 128 characters"),
        ({"sender": ""}, "sender", "at least 1 character"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"schema_version": "one"}, "schema_version", "1"),
        ({"dlt_template_id": "12ab"}, "dlt_template_id", "pattern"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at", "timezone"),
        ({"expires_at": datetime(2030, 1, 1)}, "expires_at", "timezone"),
        ({"expires_at": "soon"}, "expires_at", "datetime"),
        ({"metadata": {str(i): i for i in range(51)}}, "metadata", "at most 50 keys"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata", "dictionary"),
    ],
)
def test_invalid_send_requests_name_the_field_and_the_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    lines = problems(**changes)
    assert len(lines) == 1, lines
    name, _, why = lines[0].partition(": ")
    assert name == field
    assert reason in why
    assert "Value error" not in why
    assert "https://" not in why  # no pydantic documentation links in user-facing reasons


def test_every_missing_required_field_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        SendRequest.model_validate({"to": "+919812345678"})
    assert describe(caught.value) == [
        "message_id: Field required",
        "campaign_id: Field required",
        "text: Field required",
    ]


def test_reasons_do_not_echo_the_input() -> None:
    secretish = "leaked-input-value " * 200
    lines = problems(text=secretish)
    assert "leaked-input-value" not in " ".join(lines)


def test_describe_names_nested_fields_with_dots() -> None:
    with pytest.raises(ValidationError) as caught:
        ReceiptEvent.model_validate(
            {**_event_fields(), "metadata": {"bad": {1, 2}}}  # a set is not JSON
        )
    assert describe(caught.value) == ["metadata.bad: input was not a valid JSON value"]


# -- ReceiptEvent and statuses --------------------------------------------------------------


def _event_fields(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": make_event_id("msg-0001", Status.DELIVERED, 1764230400),
        "message_id": "msg-0001",
        "campaign_id": "diwali-2025",
        "status": "delivered",
        "occurred_at": "2025-11-27T08:00:00Z",
        **changes,
    }


def test_the_status_vocabulary_is_exactly_the_contract() -> None:
    assert {s.value for s in Status} == {
        "submitted", "delivered", "failed", "rejected", "expired", "clicked",
    }


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (Status.SUBMITTED, False),
        (Status.DELIVERED, True),
        (Status.FAILED, True),
        (Status.REJECTED, True),
        (Status.EXPIRED, True),
        (Status.CLICKED, False),
    ],
)
def test_terminal_statuses(status: Status, terminal: bool) -> None:
    assert status.terminal is terminal
    assert (status in TERMINAL_STATUSES) is terminal


@pytest.mark.parametrize("status", list(Status))
def test_each_status_routes_as_sms_dot_status(status: Status) -> None:
    assert status.routing_key == f"sms.{status.value}"


@pytest.mark.parametrize("status", ["bounced", "DELIVERED", "DELIVRD", "", None])
def test_an_unknown_status_is_refused(status: object) -> None:
    with pytest.raises(ValidationError) as caught:
        ReceiptEvent.model_validate(_event_fields(status=status))
    assert describe(caught.value)[0].startswith("status: ")


def test_a_receipt_event_round_trips_through_json() -> None:
    event = ReceiptEvent.model_validate(
        _event_fields(
            status="submitted", sender="acme-otp", provider_message_id="mid-1", attempt=2,
            segments=3, encoding="ucs2", metadata={"customer": 42},
        )
    )
    assert event.encoding is Encoding.UCS2
    assert event.status is Status.SUBMITTED
    assert ReceiptEvent.model_validate_json(event.model_dump_json()) == event


def test_receipt_events_ignore_unknown_fields() -> None:
    event = ReceiptEvent.model_validate(_event_fields(new_in_v2="x"))
    assert event == ReceiptEvent.model_validate(_event_fields())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"occurred_at": "2025-11-27T08:00:00"}, "occurred_at"),
        ({"attempt": 0}, "attempt"),
        ({"segments": 0}, "segments"),
        ({"encoding": "utf8"}, "encoding"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_invalid_receipt_events_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ReceiptEvent.model_validate(_event_fields(**changes))
    assert [line.partition(":")[0] for line in describe(caught.value)] == [field]


def test_campaign_id_may_be_absent_for_unmappable_receipts() -> None:
    fields = _event_fields()
    del fields["campaign_id"]
    assert ReceiptEvent.model_validate(fields).campaign_id is None


# -- event ids ------------------------------------------------------------------------------


def test_event_ids_are_stable_for_the_same_receipt() -> None:
    first = make_event_id("msg-1", Status.DELIVERED, 1764230400)
    assert first == make_event_id("msg-1", Status.DELIVERED, 1764230400)
    assert first == make_event_id("msg-1", "delivered", "1764230400")


def test_event_ids_are_hex_of_a_fixed_length() -> None:
    event_id = make_event_id("msg-1", Status.SUBMITTED)
    assert len(event_id) == 32
    int(event_id, 16)


@pytest.mark.parametrize(
    "other",
    [
        ("msg-2", Status.DELIVERED, 1764230400),
        ("msg-1", Status.FAILED, 1764230400),
        ("msg-1", Status.DELIVERED, 1764230401),
        ("msg-1", Status.DELIVERED),
        ("msg-1", Status.DELIVERED, 1764230400, "https://shop.example/sale"),
        ("msg-1", Status.DELIVERED, 17642304, 0),
    ],
)
def test_event_ids_tell_different_receipts_apart(other: tuple[Any, ...]) -> None:
    assert make_event_id("msg-1", Status.DELIVERED, 1764230400) != make_event_id(*other)


def test_event_ids_do_not_collide_by_concatenation() -> None:
    assert make_event_id("msg-1", Status.CLICKED, "ab", "c") != make_event_id(
        "msg-1", Status.CLICKED, "a", "bc"
    )


# -- metadata: bounded, because it is copied into every event and kept in Redis ------------


def test_metadata_up_to_the_byte_bound_is_accepted() -> None:
    overhead = len('{"k":""}')
    metadata = {"k": "x" * (MAX_METADATA_BYTES - overhead)}
    assert len(orjson.dumps(metadata)) == MAX_METADATA_BYTES
    assert send_request(metadata=metadata).metadata == metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": "x" * MAX_METADATA_BYTES},
        {"k": "é" * (MAX_METADATA_BYTES // 2)},  # bytes, not characters, are counted
        {"nested": [{"deep": "y" * 100}] * 50},
        {"blob": "z" * 5_000_000},  # what used to become a 5 MB event and Redis key
    ],
)
def test_larger_metadata_is_refused_with_its_size_and_why(metadata: dict[str, Any]) -> None:
    [line] = problems(metadata=metadata)
    field, _, why = line.partition(": ")
    assert field == "metadata"
    assert f"is {len(orjson.dumps(metadata))} bytes as JSON, more than {MAX_METADATA_BYTES}" in why
    assert "every event" in why
