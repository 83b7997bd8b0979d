"""``ics-sms console``: the operators' web screen, and its accounts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click
from aiohttp import web

from ics_sms.cli.common import CliError, load_settings, open_senders
from ics_sms.console.users import (
    MIN_PASSWORD_LENGTH,
    Role,
    User,
    UserError,
    check_name,
    hash_password,
    open_user_store,
)
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import open_message_store

__all__ = ["console_group", "serve_console"]


@click.group("console", invoke_without_command=True)
@click.pass_context
def console_group(ctx: click.Context) -> None:
    """Serve the operator console (ICS_SMS_CONSOLE_HOST:ICS_SMS_CONSOLE_PORT, by default
    127.0.0.1:8090), or manage its accounts (``users``).

    Never put it on the receiver's internet-facing address: it configures senders."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve_command)


@console_group.command("serve")
@click.option("--host", help="Address to bind  [default: ICS_SMS_CONSOLE_HOST]")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port  [default: ICS_SMS_CONSOLE_PORT]")
def serve_command(host: str | None, port: int | None) -> None:
    """Serve the console until interrupted."""
    settings = load_settings(console_host=host, console_port=port)
    users = open_user_store(settings)
    try:
        if not users.all():
            click.echo("warning: no console account yet: create one with "
                       "`ics-sms console users add NAME --role admin`", err=True)
    except UserError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"ics-sms console on http://{settings.console_host}:{settings.console_port}/ "
               f"(accounts: {users.description})", err=True)
    try:
        asyncio.run(_serve_until_signalled(settings))
    except OSError as exc:
        raise CliError(f"cannot serve on {settings.console_host}:{settings.console_port}: "
                       f"{exc.strerror or exc}") from None


async def serve_console(settings: Settings, stop: asyncio.Event, *,
                        started: asyncio.Event | None = None) -> None:
    """Serve the console on the settings' stores until ``stop`` is set."""
    from ics_sms.console.app import create_console_app  # jinja2 only when serving

    source, _ = open_senders(settings)
    app = create_console_app(settings, senders=source, messages=open_message_store(settings),
                             users=open_user_store(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.console_host, settings.console_port).start()
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()


async def _serve_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve_console(settings, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@console_group.group("users")
def users_group() -> None:
    """Console accounts: beside the senders (the registry's database, or a 0600 file next to
    the senders file)."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    return password


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.VIEWER.value,
              show_default=True, help="admin may change senders; viewer only looks.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (else: prompt).")
def add_user(name: str, role: str, password_stdin: bool) -> None:
    """Create account NAME, or set its role and password if it exists."""
    settings = load_settings()
    store = open_user_store(settings)
    try:
        user = User(check_name(name), Role(role), hash_password(_read_password(password_stdin)))
        existed = store.get(user.name) is not None
        store.put(user)
    except UserError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"{'updated' if existed else 'added'} console account {user.name} "
               f"({user.role.value}) in {store.description}")


@users_group.command("list")
def list_users() -> None:
    """The console accounts and their roles."""
    store = open_user_store(load_settings())
    try:
        users = store.all()
    except UserError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if not users:
        click.echo(f"no console accounts in {store.description}")
    for user in users:
        click.echo(f"{user.name:<24} {user.role.value}")


@users_group.command("remove")
@click.argument("name")
def remove_user(name: str) -> None:
    """Delete account NAME (its open sessions end when the console restarts)."""
    store = open_user_store(load_settings())
    try:
        with contextlib.closing(store):
            gone = store.delete(name.strip().lower())
    except UserError as exc:
        raise CliError(str(exc)) from None
    if not gone:
        raise CliError(f"no console account {name!r}")
    click.echo(f"removed console account {name}")
