"""A running receiver follows the senders file: new senders are served, removed ones for
their grace period, unknown tracking URLs are counted and logged (never their token).

The real receiver (:func:`~ics_sms.callbacks.serve.start_receiver`) on the embedded broker,
with :class:`~ics_sms.stores.live.LiveSenders` reloading a senders file as
``ics-sms receiver`` does. Changes are awaited by polling what the receiver reads, with a
generous deadline that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from ics_sms.broker.memory import hub_for
from ics_sms.callbacks.serve import start_receiver
from ics_sms.schemas.messages import ReceiptEvent
from ics_sms.schemas.senders import Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import InMemoryContextStore
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.senders_file import FileSenderSource
from tests.callbacks.receiver_helpers import delivered

SECRET = "live-senders-secret-of-at-least-32-bytes"
DEADLINE_S = 30.0
NO_SENDER = "receipts on a tracking URL of no sender"

ALPHA = Sender(name="alpha", type=SenderType.SERVICE_IMPLICIT, sender_id="ALPHAS",
               username="alpha", token="not-a-real-ics-token-a")
BETA = Sender(name="beta", type=SenderType.TRANSACTIONAL, sender_id="BETASS",
              username="beta", token="not-a-real-ics-token-b")


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not seen within {DEADLINE_S:g}s: {what}")
        await asyncio.sleep(0.02)


def unknown_urls(reason: str) -> float:
    return REGISTRY.get_sample_value("ics_sms_receipts_unknown_url_total",
                                     {"reason": reason}) or 0.0


@dataclass
class Running:
    """A receiver serving a senders file that the test edits."""

    settings: Settings
    live: LiveSenders
    session: aiohttp.ClientSession
    port: int
    signer: SmsgidSigner

    def write(self, senders: Senders) -> None:
        save_senders(self.settings.senders_file, senders)

    async def post(self, path: str, body: object) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"http://127.0.0.1:{self.port}{path}",
                                     data=orjson.dumps(body)) as response:
            assert response.content_type == "application/json"
            return response.status, orjson.loads(await response.read())

    async def receipt(self, on: Sender, signed_for: str, message_id: str
                      ) -> tuple[int, dict[str, Any]]:
        return await self.post(on.tracking_path(),
                               delivered(self.signer.sign(message_id, signed_for)))

    def events(self) -> list[ReceiptEvent]:
        queue = hub_for(self.settings.broker_url.get_secret_value()).queues[
            self.settings.topology.events_queue]
        return [ReceiptEvent.model_validate_json(m.body) for m in queue.ready]


StartRunning = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartRunning]:
    stops: list[Callable[[], Any]] = []

    async def starting(senders: Senders | None, **settings: Any) -> Running:
        config = Settings(broker_url=f"memory://live-{uuid.uuid4().hex[:8]}",
                          namespace="live.", senders_file=tmp_path / "senders.toml",
                          callback_secret=SECRET, senders_reload_s=0.1, **settings)
        if senders is not None:
            save_senders(config.senders_file, senders)
        live = LiveSenders.open(FileSenderSource(config.senders_file), config,
                                check_tokens=False)
        receiver = await start_receiver(config, live, host="127.0.0.1", port=0,
                                        context_store=InMemoryContextStore())
        stop = asyncio.Event()
        reloading = asyncio.create_task(live.run(stop))
        session = aiohttp.ClientSession(headers={"Content-Type": "application/json"})

        async def stopping() -> None:
            await session.close()
            await receiver.stop()
            stop.set()
            await asyncio.wait_for(reloading, DEADLINE_S)

        stops.append(stopping)
        return Running(config, live, session, receiver.port, SmsgidSigner(SECRET))

    yield starting
    for stop in stops:
        await stop()


async def test_a_sender_added_after_start_gets_its_receipts(start: StartRunning) -> None:
    running = await start(Senders().add(ALPHA))
    assert (await running.receipt(BETA, "beta", "m-1"))[0] == 404

    running.write(Senders().add(ALPHA).add(BETA))
    await eventually(lambda: "beta" in running.live.current.senders, "beta added")

    status, answer = await running.receipt(BETA, "beta", "m-1")
    assert (status, answer["processed"]) == (200, 1)
    [event] = running.events()
    assert (event.sender, event.message_id) == ("beta", "m-1")


async def test_a_removed_sender_keeps_its_url_for_the_grace_period(
    start: StartRunning
) -> None:
    both = Senders().add(ALPHA).add(BETA)
    running = await start(both)
    running.write(both.remove("beta"))
    await eventually(lambda: "beta" not in running.live.current.senders, "beta removed")

    status, answer = await running.receipt(BETA, "beta", "m-1")
    assert (status, answer["processed"]) == (200, 1)
    # the smsgid still binds the message to its sender: alpha's receipts are refused there
    status, answer = await running.receipt(BETA, "alpha", "m-2")
    assert status == 403
    assert answer["unprocessed"][0]["reason"] == "smsgid of another sender"
    assert [(e.sender, e.message_id) for e in running.events()] == [("beta", "m-1")]


async def test_a_removed_sender_after_the_grace_period_is_unknown(
    start: StartRunning
) -> None:
    both = Senders().add(ALPHA).add(BETA)
    running = await start(both, senders_grace_s=0)
    running.write(both.remove("beta"))
    await eventually(lambda: "beta" not in running.live.current.senders, "beta removed")
    before = unknown_urls("grace_over")
    with capture_logs() as logs:
        status, answer = await running.receipt(BETA, "beta", "m-1")
    assert (status, answer["reason"]) == (404, "unknown tracking URL")
    assert unknown_urls("grace_over") == before + 1
    [line] = [line for line in logs if line["event"] == NO_SENDER]
    assert (line["reason"], line["sender"], line["count"]) == ("grace_over", "beta", 1)
    assert BETA.tracking_token not in str(logs)
    assert running.events() == []


async def test_an_unknown_tracking_url_is_counted_and_logged_without_its_token(
    start: StartRunning
) -> None:
    running = await start(Senders().add(ALPHA))
    before = unknown_urls("unknown")
    token = "an-unknown-tracking-token-123"
    with capture_logs() as logs:
        for _ in range(3):
            status, answer = await running.post(f"/ics/{token}/receipts", delivered("x"))
            assert (status, answer["reason"]) == (404, "unknown tracking URL")
    assert unknown_urls("unknown") == before + 3
    lines = [line for line in logs if line["event"] == NO_SENDER]
    assert len(lines) == 1  # the others are counted for the next line
    assert (lines[0]["reason"], lines[0]["configured"]) == ("unknown", 1)
    assert token not in str(logs)


async def test_a_receiver_without_senders_starts_warns_and_picks_them_up(
    start: StartRunning
) -> None:
    with capture_logs() as logs:
        running = await start(None)
    assert any(line["event"] == "no senders configured"
               and line["log_level"] == "warning" for line in logs)
    assert (await running.receipt(ALPHA, "alpha", "m-1"))[0] == 404

    running.write(Senders().add(ALPHA))
    await eventually(lambda: len(running.live.current) == 1, "alpha added")
    assert (await running.receipt(ALPHA, "alpha", "m-1"))[0] == 200
