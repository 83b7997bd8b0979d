"""The published contract: JSON Schema of both messages and an AsyncAPI 3.0 document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ics_sms.schemas.export import asyncapi_document, export, json_schemas
from ics_sms.schemas.messages import ReceiptEvent, SendRequest, Status, make_event_id
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import Topology

VALID_REQUEST: dict[str, Any] = {
    "message_id": "msg-0001",
    "campaign_id": "diwali-2025",
    "to": "+919812345678",
    "text": "Your OTP is 4821",
}


def validator(name: str) -> Draft202012Validator:
    schema = json_schemas()[name]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, instance: object) -> list[str]:
    return [e.message for e in validator(name).iter_errors(instance)]


# -- JSON Schema ----------------------------------------------------------------------------


def test_both_messages_have_a_draft_2020_12_schema_with_an_id() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"SendRequest", "ReceiptEvent"}
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert name in schema["$id"]
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    "request_fields",
    [
        VALID_REQUEST,
        {**VALID_REQUEST, "sender": "acme-otp", "dlt_template_id": "1207161000000000000",
         "expires_at": "2030-01-01T00:00:00+05:30", "metadata": {"k": [1, "x", None]}},
    ],
)
def test_a_valid_send_request_dump_validates(request_fields: dict[str, Any]) -> None:
    dumped = json.loads(SendRequest.model_validate(request_fields).model_dump_json())
    assert errors("SendRequest", dumped) == []
    dumped_without_none = json.loads(
        SendRequest.model_validate(request_fields).model_dump_json(exclude_none=True)
    )
    assert errors("SendRequest", dumped_without_none) == []


def test_a_send_request_as_a_producer_writes_it_validates() -> None:
    written = {**VALID_REQUEST, "to": "+91 98123-45678", "schema_version": 1, "new_field": 1}
    assert errors("SendRequest", written) == []


@pytest.mark.parametrize(
    ("changes", "removed"),
    [
        ({}, "message_id"),
        ({}, "text"),
        ({}, "to"),
        ({"message_id": "has space"}, None),
        ({"message_id": "m" * 65}, None),
        ({"text": "x" * 2001}, None),
        ({"text": 42}, None),
        ({"to": "call me"}, None),
        ({"schema_version": 2}, None),
        ({"dlt_template_id": "abc"}, None),
        ({"metadata": "not an object"}, None),
        ({"sender": ""}, None),
    ],
)
def test_invalid_send_requests_are_refused_by_the_schema(
    changes: dict[str, Any], removed: str | None
) -> None:
    instance = {**VALID_REQUEST, **changes}
    if removed:
        del instance[removed]
    assert errors("SendRequest", instance) != []


@pytest.mark.parametrize("status", list(Status))
def test_receipt_event_dumps_validate(status: Status) -> None:
    event = ReceiptEvent(
        event_id=make_event_id("msg-1", status), message_id="msg-1", campaign_id="c",
        status=status, occurred_at="2025-11-27T08:00:00Z",
        attempt=1, segments=2, encoding="gsm7",
        metadata={"customer": 42},
    )
    assert errors("ReceiptEvent", json.loads(event.model_dump_json())) == []
    assert errors("ReceiptEvent", json.loads(event.model_dump_json(exclude_none=True))) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "bounced"},
        {"attempt": 0},
        {"encoding": "utf8"},
        {"occurred_at": None},
        {"event_id": None},
    ],
)
def test_invalid_receipt_events_are_refused_by_the_schema(changes: dict[str, Any]) -> None:
    instance = {"event_id": "e", "message_id": "m", "status": "delivered",
                "occurred_at": "2025-11-27T08:00:00Z", **changes}
    assert errors("ReceiptEvent", instance) != []


# -- AsyncAPI -------------------------------------------------------------------------------


def refs(node: object) -> Iterator[str]:
    """Every ``$ref`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


@pytest.fixture(params=["", "t1."], ids=["contract", "namespaced"])
def topology(request: pytest.FixtureRequest) -> Topology:
    return Topology(namespace=request.param)


@pytest.fixture
def document(topology: Topology) -> dict[str, Any]:
    return asyncapi_document(topology)


def test_it_is_an_asyncapi_3_document(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "ics-sms"
    assert document["info"]["version"]
    assert document["defaultContentType"] == "application/json"


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 20
    for ref in found:
        resolve(document, ref)


def test_the_document_is_plain_json(document: dict[str, Any]) -> None:
    assert json.loads(json.dumps(document)) == document


def _channels_by_address(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {channel["address"]: channel for channel in document["channels"].values()}


def test_there_is_a_channel_per_lane(document: dict[str, Any], topology: Topology) -> None:
    by_address = _channels_by_address(document)
    for lane in Lane:
        channel = by_address[topology.send_routing_key(lane)]
        assert resolve(document, next(refs(channel["messages"])))["name"] == "SendRequest"
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == topology.send_exchange
        assert exchange["type"] == "direct"
        queue_channel = by_address[topology.send_queue(lane)]
        assert queue_channel["bindings"]["amqp"]["queue"]["name"] == topology.send_queue(lane)


def test_there_is_a_channel_per_status(document: dict[str, Any], topology: Topology) -> None:
    by_address = _channels_by_address(document)
    for status in Status:
        channel = by_address[status.routing_key]
        assert resolve(document, next(refs(channel["messages"])))["name"] == "ReceiptEvent"
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == topology.events_exchange
        assert exchange["type"] == "topic"


def test_the_events_and_dead_letter_queues_are_documented(
    document: dict[str, Any], topology: Topology
) -> None:
    by_address = _channels_by_address(document)
    assert by_address[topology.events_queue]["bindings"]["amqp"]["is"] == "queue"
    assert by_address[topology.dead_queue]["bindings"]["amqp"]["is"] == "queue"


def test_every_operation_points_at_a_channel(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert operations
    for operation in operations.values():
        assert operation["action"] in {"send", "receive"}
        assert resolve(document, operation["channel"]["$ref"]) in document["channels"].values()
    used = {op["channel"]["$ref"].rpartition("/")[2] for op in operations.values()}
    assert used >= {k for k in document["channels"] if k != "dead_letters"}


def test_message_payloads_are_the_json_schemas(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert set(messages) == {"SendRequest", "ReceiptEvent"}
    for name, message in messages.items():
        assert message["contentType"] == "application/json"
        payload = resolve(document, message["payload"]["$ref"])
        assert payload["properties"].keys() == json_schemas()[name]["properties"].keys()


def test_payload_schemas_inside_the_document_validate_messages(document: dict[str, Any]) -> None:
    # A consumer generating code from asyncapi.json validates with the embedded schemas.
    schema = {**document, "$ref": "#/components/schemas/SendRequest"}
    checker = Draft202012Validator(schema)
    assert list(checker.iter_errors(VALID_REQUEST)) == []
    assert list(checker.iter_errors({**VALID_REQUEST, "text": 1})) != []
    event_schema = {**document, "$ref": "#/components/schemas/ReceiptEvent"}
    event = {"event_id": "e", "message_id": "m", "status": "bounced",
             "occurred_at": "2025-11-27T08:00:00Z"}
    assert list(Draft202012Validator(event_schema).iter_errors(event)) != []
    event["status"] = "delivered"
    assert list(Draft202012Validator(event_schema).iter_errors(event)) == []


# -- export ---------------------------------------------------------------------------------


def test_export_writes_the_three_files(tmp_path: Path) -> None:
    target = tmp_path / "contract" / "v1"
    written = export(target)
    assert sorted(p.name for p in written) == [
        "ReceiptEvent.schema.json", "SendRequest.schema.json", "asyncapi.json",
    ]
    assert sorted(target.iterdir()) == sorted(written)
    assert json.loads((target / "asyncapi.json").read_text()) == asyncapi_document()
    assert json.loads((target / "SendRequest.schema.json").read_text()) == (
        json_schemas()["SendRequest"]
    )


def test_export_is_reproducible(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in export(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export(tmp_path / "b")}
    assert first == second


def test_export_uses_the_given_topology(tmp_path: Path) -> None:
    export(tmp_path, Topology(namespace="staging."))
    document = json.loads((tmp_path / "asyncapi.json").read_text())
    assert "staging.sms.send.service" in _channels_by_address(document)
