"""The sweeper: every message ends, and its expiry event is offered until confirmed."""

from __future__ import annotations

import pytest

from ics_sms.broker.base import PublishFailed
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.topology import Topology
from ics_sms.stores.messages import InMemoryMessageStore, State, Transition
from ics_sms.workers.sweeper import NO_RECEIPT, Sweeper, sweep_interval_s
from tests.stores.test_messages import Clock, claim
from tests.workers.test_settle import RecordingBroker


async def test_an_unconfirmed_expiry_is_published_again_with_the_same_event_id() -> None:
    clock = Clock()
    store = InMemoryMessageStore(receipt_deadline_s=100, clock=clock)
    await store.claim([claim(1), claim(2)])
    await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
                       Transition("m2", State.DELIVERED, event_id="d")])
    broker = RecordingBroker()
    sweeper = Sweeper(store, broker, Topology(), interval_s=1.0)
    assert await sweeper.sweep_once() == 0
    clock.now += 101
    broker.refuse = 1
    with pytest.raises(PublishFailed):
        await sweeper.sweep_once()
    assert await sweeper.sweep_once() == 0  # offered again only after retry_s
    clock.now += 11
    assert await sweeper.sweep_once() == 1
    [event] = [ReceiptEvent.model_validate_json(m.body) for m in broker.published]
    assert (event.message_id, event.status, event.error_code) == ("m1", Status.EXPIRED,
                                                                  NO_RECEIPT)
    assert event.provider_message_id == "mid-1" and event.campaign_id == "c1"
    clock.now += 100
    assert await sweeper.sweep_once() == 0  # confirmed: never again


def test_the_sweep_interval_follows_the_deadline() -> None:
    assert sweep_interval_s(72 * 3600) == 30.0
    assert sweep_interval_s(1.0) == 0.2
