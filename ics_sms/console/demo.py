"""``ics-sms demo --console``: the console on the demo's senders, messages and broker,
with a generated operator account, so a newcomer sees it in one command."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator

import click
from aiohttp import web

from ics_sms.console.users import FileUserStore, Role, User, hash_password
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import MessageStore
from ics_sms.stores.senders_file import FileSenderSource

__all__ = ["DEMO_OPERATOR", "demo_console", "until_interrupted"]

DEMO_OPERATOR = "demo"


@contextlib.asynccontextmanager
async def demo_console(settings: Settings, messages: MessageStore,
                       port: int) -> AsyncIterator[str]:
    """Serve the console on 127.0.0.1:``port`` over the demo's stores; yields its URL
    (the login is printed on standard error, once)."""
    from ics_sms.console.app import create_console_app  # jinja2 only with --console

    folder = settings.senders_file.parent
    users = FileUserStore(folder / "console-users.json")
    password = secrets.token_urlsafe(12)
    users.put(User(DEMO_OPERATOR, Role.ADMIN, hash_password(password)))
    app = create_console_app(settings, senders=FileSenderSource(settings.senders_file),
                             messages=messages, users=users, close_stores=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        url = f"http://127.0.0.1:{port}/"
        click.echo(f"console: {url}  log in as {DEMO_OPERATOR} / {password}", err=True)
        yield url
    finally:
        await runner.cleanup()


async def until_interrupted() -> None:
    """Wait for Ctrl-C (or SIGTERM)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    click.echo("the campaign is done; the console stays up until Ctrl-C", err=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
