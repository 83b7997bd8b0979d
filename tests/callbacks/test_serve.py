"""Serving in process: a graceful stop lets requests in flight finish."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import orjson
import pytest

from ics_sms.broker.memory import hub_for
from ics_sms.callbacks.serve import StartupError, bind_socket, start_receiver
from ics_sms.schemas.senders import Sender, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import InMemoryContextStore, MessageContext


class GatedStore(InMemoryContextStore):
    """Holds every lookup until ``gate`` is set; ``entered`` tells a lookup is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def get_many(self, message_ids: Iterable[str]) -> dict[str, MessageContext]:
        self.entered.set()
        await self.gate.wait()
        return await super().get_many(message_ids)


@pytest.fixture
def memory_settings(tmp_path: Path) -> Settings:
    return Settings(broker_url=f"memory://serve-{uuid.uuid4().hex[:8]}",
                    namespace="serve.", senders_file=tmp_path / "senders.toml",
                    callback_secret="serve-secret-of-at-least-32-bytes-long")


async def test_stop_lets_a_request_in_flight_finish_and_refuses_new_ones(
    memory_settings: Settings, senders: Senders, sender: Sender
) -> None:
    store = GatedStore()
    receiver = await start_receiver(memory_settings, senders, host="127.0.0.1", port=0,
                                    context_store=store)
    url = f"http://127.0.0.1:{receiver.port}{sender.tracking_path()}"
    smsgid = SmsgidSigner("serve-secret-of-at-least-32-bytes-long").sign("m-1", "acme-otp")
    body = orjson.dumps([{"event": "delivered", "data": [{"ts": 1764230400, "meta": smsgid}]}])
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(session.post(url, data=body))
        await store.entered.wait()
        stopping = asyncio.create_task(receiver.stop())
        await asyncio.sleep(0)  # the listener closes first
        store.gate.set()
        response = await in_flight
        assert response.status == 200
        assert orjson.loads(await response.read())["processed"] == 1
        response.release()
        await stopping
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(url, data=body)
    hub = hub_for(memory_settings.broker_url.get_secret_value())
    assert hub.depth(memory_settings.topology.events_queue) == 1


async def test_a_taken_port_is_a_startup_error(memory_settings: Settings,
                                               senders: Senders) -> None:
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
        await start_receiver(memory_settings, senders, host="127.0.0.1", port=port)
    taken.close()
