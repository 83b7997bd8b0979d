"""The dead letters page on real RabbitMQ: counts by reason, masked list, purge after a
confirmation, and a viewer who cannot act."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ics_sms.broker.base import Broker
from ics_sms.console.app import create_console_app
from ics_sms.console.users import FileUserStore, Role, User, hash_password
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import InMemoryMessageStore
from ics_sms.stores.senders import MemorySenderSource
from ics_sms.workers.dead_letters import Selection, collect
from tests.console.conftest import PASSWORD, Console
from tests.workers.conftest import request
from tests.workers.dead_letters_helpers import dead_letter, declared_broker


@pytest.fixture
async def broker(amqp_settings: Settings) -> AsyncIterator[Broker]:
    async with declared_broker(amqp_settings) as opened:
        yield opened


@pytest.fixture
async def console(amqp_settings: Settings, broker: Broker,
                  tmp_path: Path) -> AsyncIterator[Console]:
    await dead_letter(amqp_settings, broker, request(1), "dlt")
    await dead_letter(amqp_settings, broker, request(2), "dlt")
    await dead_letter(amqp_settings, broker, request(3), "unknown_sender")
    users = FileUserStore(tmp_path / "console-users.json")
    users.put(User("ada", Role.ADMIN, hash_password(PASSWORD)))
    users.put(User("vic", Role.VIEWER, hash_password(PASSWORD)))
    source, messages = MemorySenderSource(), InMemoryMessageStore()
    app = create_console_app(amqp_settings, senders=source, messages=messages, users=users)
    async with TestClient(TestServer(app)) as client:
        yield Console(client, source, messages)


async def test_counts_by_reason_and_a_masked_list(console: Console) -> None:
    await console.login()
    page = await (await console.client.get("/dead-letters")).text()
    assert "3 dead letter(s)" in page
    assert '<td data-label="Reason"><a href="?reason=dlt">dlt</a></td>' \
           '<td data-label="Dead letters" class="num">2</td>' in page
    assert "+447700900123" not in page  # masked
    only = await (await console.client.get("/dead-letters",
                                           params={"reason": "unknown_sender"})).text()
    assert 'data-message="m3"' in only and 'data-message="m1"' not in only


async def test_purge_needs_the_confirmation_and_removes_only_the_reason(
        console: Console, amqp_settings: Settings) -> None:
    csrf = await console.login()
    confirm = await (await console.client.get("/dead-letters/purge",
                                              params={"reason": "dlt"})).text()
    assert "removes for good 2 dead letter(s)" in confirm
    refused = await console.client.post("/dead-letters/purge",
                                        data={"csrf": csrf, "reason": "dlt"})
    assert refused.status == 400
    done = await console.client.post("/dead-letters/purge", data={
        "csrf": csrf, "reason": "dlt", "confirm": "yes"})
    assert "purged 2 dead letter(s): dlt 2" in await done.text()
    left = await collect(amqp_settings, Selection())
    assert [letter.message_id for letter in left] == ["m3"]


async def test_a_viewer_sees_the_dead_letters_but_cannot_replay_or_purge(
        console: Console, amqp_settings: Settings) -> None:
    csrf = await console.login("vic")
    page = await (await console.client.get("/dead-letters")).text()
    assert "3 dead letter(s)" in page and "Replay" not in page
    for path in ("/dead-letters/replay", "/dead-letters/purge"):
        response = await console.client.post(path, data={
            "csrf": csrf, "reason": "dlt", "confirm": "yes"})
        assert response.status == 403
    assert len(await collect(amqp_settings, Selection())) == 3
