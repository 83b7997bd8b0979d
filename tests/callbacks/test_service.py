"""ReceiptService: exactly one final status per message, whatever ICS posts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from ics_sms.broker.base import Outgoing
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.receipts import Receipt
from ics_sms.callbacks.service import ReceiptService
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import InMemoryContextStore
from ics_sms.stores.messages import (
    ClaimResult,
    InMemoryMessageStore,
    State,
    Transition,
)
from tests.stores.test_messages import claim

AT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class Publisher:
    """Records what would be published (confirmed at once), or refuses it."""

    def __init__(self) -> None:
        self.events: list[ReceiptEvent] = []
        self.refuse = False

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self.refuse:
            raise RuntimeError("refused")
        self.events += [ReceiptEvent.model_validate_json(m.body) for m in messages]


@pytest.fixture
async def messages() -> InMemoryMessageStore:
    store = InMemoryMessageStore()
    await store.claim([claim(1), claim(2)])
    await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
                       Transition("m2", State.UNCERTAIN)])
    return store


def service(messages: InMemoryMessageStore, publisher: Publisher) -> ReceiptService:
    return ReceiptService(Topology(), InMemoryContextStore(),
                          cast(ConfirmingPublisher, cast(Any, publisher)), messages)


def receipt(message_id: str, status: Status, ts: int) -> Receipt:
    return Receipt(message_id, status, AT, ts, error_code="E1" if status is Status.FAILED
                   else None)


async def test_the_first_final_wins_and_a_contradiction_is_not_final(
        messages: InMemoryMessageStore) -> None:
    publisher = Publisher()
    await service(messages, publisher).publish("otp", [
        receipt("m1", Status.DELIVERED, 1), receipt("m1", Status.FAILED, 2)])
    delivered, failed = publisher.events
    assert delivered.final is None and failed.final is False
    assert delivered.provider_message_id == "mid-1"  # ICS's mid, from the record
    assert delivered.campaign_id == "c1"  # context from the record, the context store is empty


async def test_a_receipt_ends_an_uncertain_message(messages: InMemoryMessageStore) -> None:
    publisher = Publisher()
    await service(messages, publisher).publish("otp", [receipt("m2", Status.DELIVERED, 1)])
    assert publisher.events[0].final is None
    [(result, record)] = await messages.claim([claim(2)])
    assert result is ClaimResult.DONE and record.state is State.DELIVERED
    assert await messages.sweep() == []


async def test_a_replayed_receipt_after_a_refused_publish_is_still_the_final(
        messages: InMemoryMessageStore) -> None:
    publisher = Publisher()
    publisher.refuse = True
    receipts = [receipt("m1", Status.FAILED, 5)]
    with pytest.raises(RuntimeError):
        await service(messages, publisher).publish("otp", receipts)
    publisher.refuse = False
    await service(messages, publisher).publish("otp", receipts)
    assert [e.final for e in publisher.events] == [None]


async def test_clicks_are_not_transitions(messages: InMemoryMessageStore) -> None:
    publisher = Publisher()
    click = Receipt("m1", Status.CLICKED, AT, 3, url="https://example.com/")
    await service(messages, publisher).publish("otp", [click, receipt("m1", Status.DELIVERED, 4)])
    assert [(e.status, e.final) for e in publisher.events] == [(Status.CLICKED, None),
                                                               (Status.DELIVERED, None)]
