"""How our messages become broker messages: exchange, routing key, JSON body, message id."""

from __future__ import annotations

import json

import pytest

from ics_sms.broker.codec import event_message, send_message
from ics_sms.schemas.messages import ReceiptEvent, SendRequest, Status, make_event_id
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import HEADER_PUBLISH_ID, Topology

REQUEST = SendRequest(
    message_id="msg-1", campaign_id="c-1", to="+919812345678", text="नमस्ते 😀",
    metadata={"customer": 42},
)


@pytest.mark.parametrize("topology", [Topology(), Topology(namespace="t1.")])
@pytest.mark.parametrize("lane", list(Lane))
def test_a_send_request_goes_to_the_send_exchange_keyed_by_lane(
    topology: Topology, lane: Lane
) -> None:
    message = send_message(topology, REQUEST, lane)
    assert message.exchange == topology.send_exchange
    assert message.routing_key == lane.value
    assert message.message_id == "msg-1"
    assert message.headers is not None and list(message.headers) == [HEADER_PUBLISH_ID]


def test_the_body_is_utf8_json_that_parses_back_to_the_request() -> None:
    body = send_message(Topology(), REQUEST, Lane.SERVICE).body
    assert "नमस्ते 😀" in body.decode("utf-8")
    assert json.loads(body)["schema_version"] == 1
    assert SendRequest.model_validate_json(body) == REQUEST


def test_absent_optional_fields_are_left_out_of_the_body() -> None:
    body = json.loads(send_message(Topology(), REQUEST, Lane.SERVICE).body)
    assert "sender" not in body
    assert "expires_at" not in body


def test_headers_travel_with_the_send_request() -> None:
    message = send_message(Topology(), REQUEST, Lane.PROMOTIONAL, {"x-ics-attempt": 3},
                           publish_id="p1")
    assert message.headers == {"x-ics-attempt": 3, HEADER_PUBLISH_ID: "p1"}


@pytest.mark.parametrize("status", list(Status))
def test_an_event_is_routed_by_its_status(status: Status) -> None:
    topology = Topology(namespace="t1.")
    event = ReceiptEvent(
        event_id=make_event_id("msg-1", status), message_id="msg-1", campaign_id="c-1",
        status=status, occurred_at="2025-11-27T08:00:00Z",  # type: ignore[arg-type]
        metadata={"customer": 42},
    )
    message = event_message(topology, event)
    assert message.exchange == "t1.sms.events"
    assert message.routing_key == f"sms.{status.value}"
    assert message.message_id == event.event_id  # consumers deduplicate on it
    assert ReceiptEvent.model_validate_json(message.body) == event


def test_every_publish_has_its_own_publish_id() -> None:
    first, again = (send_message(Topology(), REQUEST, Lane.SERVICE) for _ in range(2))
    assert first.headers is not None and again.headers is not None
    assert first.headers[HEADER_PUBLISH_ID] != again.headers[HEADER_PUBLISH_ID]
    repeated = send_message(Topology(), REQUEST, Lane.SERVICE,
                            publish_id=first.headers[HEADER_PUBLISH_ID])
    assert repeated.headers == first.headers
