"""When the broker cannot confirm, ICS gets 503 (and sends again): nothing is lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from pydantic import SecretStr

from ics_sms.broker.base import Broker, ConnectionLost, Outgoing, PublishFailed
from ics_sms.broker.memory import MemoryBroker
from ics_sms.callbacks.app import CONNECTION
from ics_sms.callbacks.connection import BrokerOpener
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from tests.callbacks.receiver_helpers import (
    ACME,
    EventsQueue,
    StartReceiver,
    delivered,
    via_proxy,
)
from tests.faults import TcpProxy


async def test_broker_lost_gives_503_then_the_receiver_reconnects_and_accepts_the_retry(
    start_receiver: StartReceiver, amqp_settings: Settings, rabbitmq_url: str,
    proxy: TcpProxy, signer: SmsgidSigner, events_queue: EventsQueue,
) -> None:
    settings = amqp_settings.model_copy(update={
        "broker_url": SecretStr(via_proxy(rabbitmq_url, proxy.port))})
    receiver = await start_receiver(settings)
    connection = receiver.app[CONNECTION]
    assert (await receiver.post(delivered(signer.sign("m-before", ACME))))[0] == 200

    lost = connection.broker
    assert lost is not None
    await proxy.cut()
    await asyncio.wait([lost.closed], timeout=15)
    assert lost.closed.done()

    retried = delivered(signer.sign("m-during", ACME))
    status, answer = await receiver.post(retried)
    assert status == 503
    assert "send them again later" in answer["reason"]
    assert (await receiver.request("GET", "/readyz"))[0] == 503
    assert (await receiver.request("GET", "/healthz"))[0] == 200

    await proxy.restore()
    await asyncio.wait_for(connection.wait_ready(), timeout=15)
    assert (await receiver.request("GET", "/readyz")) == (200, {"status": "ready"})
    assert (await receiver.post(retried))[0] == 200  # ICS sends the refused batch again
    assert [e.message_id for e in events_queue.events()] == ["m-before", "m-during"]
    assert connection.reconnects == 1


async def test_unreachable_broker_at_start_fails_the_start(
    start_receiver: StartReceiver, amqp_settings: Settings,
) -> None:
    settings = amqp_settings.model_copy(update={
        "broker_url": SecretStr("amqp://guest:guest@127.0.0.1:9/"),
        "connect_retry_s": 0.0,
    })
    with pytest.raises(ConnectionLost, match="unreachable"):
        await start_receiver(settings)


class RefusingBroker(MemoryBroker):
    """Nacks every publish."""

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        raise PublishFailed("broker refused (nack) a message")


class SilentBroker(MemoryBroker):
    """Never confirms."""

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        await asyncio.Event().wait()


def opener_of(kind: type[MemoryBroker]) -> BrokerOpener:
    url = f"memory://outage-{uuid.uuid4().hex[:8]}"

    async def opener() -> Broker:
        broker = kind(url)
        await broker.connect()
        return broker

    return opener


async def test_nack_gives_503(start_receiver: StartReceiver, signer: SmsgidSigner) -> None:
    opener = opener_of(RefusingBroker)
    receiver = await start_receiver(opener=opener)
    status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
    assert (status, answer["status"]) == (503, "fail")


async def test_missing_confirm_gives_503_after_the_timeout(
    start_receiver: StartReceiver, signer: SmsgidSigner
) -> None:
    opener = opener_of(SilentBroker)
    receiver = await start_receiver(opener=opener, publish_timeout_s=0.3)
    status, answer = await receiver.post(delivered(signer.sign("m-1", ACME)))
    assert (status, answer["status"]) == (503, "fail")


async def test_a_batch_without_events_needs_no_broker(
    start_receiver: StartReceiver, signer: SmsgidSigner
) -> None:
    opener = opener_of(RefusingBroker)
    receiver = await start_receiver(opener=opener)
    status, answer = await receiver.request("GET", params={
        "smsgid": signer.sign("m-1", ACME), "status": "ACCEPTD"})
    assert (status, answer["processed"]) == (200, 1)
