"""A console on in-process stores, and a logged-in client for it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ics_sms.console.app import create_console_app
from ics_sms.console.users import FileUserStore, Role, User, hash_password
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import InMemoryMessageStore
from ics_sms.stores.senders import MemorySenderSource

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


class Console:
    """The app's client, with the stores behind it."""

    def __init__(self, client: TestClient, source: MemorySenderSource,
                 messages: InMemoryMessageStore) -> None:
        self.client = client
        self.source = source
        self.messages = messages

    async def login(self, name: str = "ada") -> str:
        page = await (await self.client.get("/login")).text()
        response = await self.client.post("/login", data={
            "name": name, "password": PASSWORD, "csrf": csrf_of(page)}, allow_redirects=False)
        assert response.status == 303, await response.text()
        return await self.csrf()

    async def csrf(self, path: str = "/senders") -> str:
        return csrf_of(await (await self.client.get(path)).text())


@pytest.fixture
def console_settings(tmp_path: Path) -> Settings:
    return Settings(senders_file=tmp_path / "senders.toml", redis_url="memory://",
                    broker_url="memory://console-test", public_url="http://127.0.0.1:9/",
                    callback_secret="test-callback-secret-of-32-bytes-or-more")


@pytest.fixture
async def console(console_settings: Settings, tmp_path: Path) -> AsyncIterator[Console]:
    users = FileUserStore(tmp_path / "console-users.json")
    users.put(User("ada", Role.ADMIN, hash_password(PASSWORD)))
    users.put(User("vic", Role.VIEWER, hash_password(PASSWORD)))
    source = MemorySenderSource()
    messages = InMemoryMessageStore()
    app = create_console_app(console_settings, senders=source, messages=messages, users=users)
    async with TestClient(TestServer(app)) as client:
        yield Console(client, source, messages)
