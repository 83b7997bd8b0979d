"""The receiver's metrics change as receipts flow; tokens never become labels.

``ics-sms receiver`` serves them on a listener of their own (tests/ics_sms/
test_receiver_cmd.py); the ICS-facing port does not.
"""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ics_sms.callbacks.metrics import refusal_kind
from ics_sms.schemas.smsgid import SmsgidSigner
from tests.callbacks.receiver_helpers import ACME, TS, EventsQueue, Receiver


async def metrics(receiver: Receiver) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest().decode()
    assert receiver.tracking_path.split("/")[2] not in text  # the token is a secret
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_receipts_and_refusals_are_counted(
    receiver: Receiver, signer: SmsgidSigner, events_queue: EventsQueue
) -> None:
    before = await metrics(receiver)
    delivered_key = ("ics_sms_receipts_total",
                     frozenset({("sender", ACME), ("status", "delivered")}))
    forged_key = ("ics_sms_receipts_refused_total", frozenset({("reason", "invalid_smsgid")}))
    status, _ = await receiver.post([{"event": "delivered", "data": [
        {"ts": TS, "meta": signer.sign("m-1", ACME)}, {"ts": TS, "meta": signer.sign("m-2", ACME)},
        {"ts": TS, "meta": "m-3.forgedmac00"}]}])
    assert status == 200
    after = await metrics(receiver)
    assert after[delivered_key] - before.get(delivered_key, 0) == 2
    assert after[forged_key] - before.get(forged_key, 0) == 1
    requests = ("ics_sms_receiver_requests_total",
                frozenset({("route", "receipts"), ("code", "200")}))
    assert after[requests] - before.get(requests, 0) == 1
    assert len(events_queue.take()) == 2


async def test_the_ics_facing_port_does_not_serve_metrics(receiver: Receiver) -> None:
    async with receiver.session.get(receiver.url("/metrics")) as response:
        assert response.status == 404


@pytest.mark.parametrize(("reason", "kind"), [
    ("invalid smsgid 'x.y'", "invalid_smsgid"),
    ("smsgid of another sender", "other_sender"),
    ("clicked url is not a link of the message", "url_not_in_message"),
    ("clicked url cannot be checked: no context", "links_unknown"),
    ("smsgid without sender binding", "unbound_legacy"),
    ("unknown event 'x'", "unknown_event"),
    ("anything else the client sent <script>", "malformed"),
])
def test_refusal_reasons_map_to_bounded_labels(reason: str, kind: str) -> None:
    assert refusal_kind(reason) == kind
