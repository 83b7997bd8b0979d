"""``ics-sms senders``: configure the ICS senders (the TOML senders file)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import aiohttp
import click
from pydantic import SecretStr, ValidationError

from ics_sms.cli.common import CliError, load_settings, read_senders
from ics_sms.schemas.errors import describe
from ics_sms.schemas.phone import InvalidNumber, normalize_e164
from ics_sms.schemas.senders import ClickTracking, Sender, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.workers.encoding import analyse
from ics_sms.workers.ics import IcsClient, SubmitResult

__all__ = ["senders_group"]


@click.group("senders")
def senders_group() -> None:
    """List, add, show, remove senders and choose the default one."""


@senders_group.command("list")
def list_senders() -> None:
    """List the configured senders; the default is marked with *."""
    senders = read_senders(load_settings())
    if not len(senders):
        click.echo("no senders configured: add one with `ics-sms senders add`")
        return
    for sender in senders:
        mark = "*" if sender.name == senders.default else " "
        click.echo(
            f"{mark} {sender.name:<20} {sender.type.value:<17} {sender.sender_id}  "
            f"clicks={sender.click_tracking.value}  rate={sender.rate_per_s:g}/s"
        )


def _token_from_options(token: str | None, token_env: str | None, token_file: Path | None
                        ) -> dict[str, object]:
    given = [o for o in (token, token_env, token_file) if o is not None]
    if len(given) != 1:
        raise CliError("give exactly one of --token -, --token-env VAR or --token-file PATH")
    if token is not None:
        if token != "-":
            raise CliError("--token takes only '-' (read the token from standard input), "
                           "so that it never appears in the shell history")
        value = sys.stdin.readline().strip()
        if not value:
            raise CliError("--token -: standard input held no token")
        return {"token": SecretStr(value)}
    if token_env is not None:
        return {"token_env": token_env}
    assert token_file is not None
    return {"token_file": token_file.resolve()}


@senders_group.command("add")
@click.argument("name")
@click.option("--type", "type_", required=True,
              type=click.Choice([t.value for t in SenderType]), help="Sender type.")
@click.option("--sender-id", required=True, help="DLT header: 6 letters (6 digits if promotional).")
@click.option("--username", required=True, help="ICS account user.")
@click.option("--token", metavar="-", help="Read the ICS token from standard input.")
@click.option("--token-env", metavar="VAR", help="Read the ICS token from env VAR at run time.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the ICS token from this file at run time.")
@click.option("--click-tracking", type=click.Choice([c.value for c in ClickTracking]),
              default=ClickTracking.OFF.value, show_default=True,
              help="Who shortens links and tracks clicks.")
@click.option("--dlt-entity-id", help="DLT Principal Entity ID (19 digits), needed for +91.")
@click.option("--rate-per-s", type=float, default=100.0, show_default=True,
              help="Most submissions per second ICS allows this sender.")
def add_sender(name: str, type_: str, sender_id: str, username: str, token: str | None,
               token_env: str | None, token_file: Path | None, click_tracking: str,
               dlt_entity_id: str | None, rate_per_s: float) -> None:
    """Add sender NAME; the first sender added becomes the default."""
    settings = load_settings()
    senders = read_senders(settings)
    try:
        sender = Sender.model_validate({
            "name": name, "type": type_, "sender_id": sender_id, "username": username,
            "click_tracking": click_tracking, "dlt_entity_id": dlt_entity_id,
            "rate_per_s": rate_per_s, **_token_from_options(token, token_env, token_file),
        })
    except ValidationError as exc:
        raise CliError(f"sender {name!r}: " + "; ".join(describe(exc))) from None
    updated = senders.add(sender)
    save_senders(settings.senders_file, updated)
    default = " (the default sender)" if updated.default == name else ""
    click.echo(f"added sender {name}{default}")
    click.echo(f"delivery tracking URL: {settings.tracking_url(sender.tracking_path())}")


@senders_group.command("show")
@click.argument("name")
def show_sender(name: str) -> None:
    """Show every field of sender NAME (token masked) and its delivery tracking URL."""
    settings = load_settings()
    senders = read_senders(settings)
    sender = senders.named(name)
    rows = [
        ("name", sender.name),
        ("default", "yes" if senders.default == name else "no"),
        ("type", sender.type.value),
        ("lane", sender.lane.value),
        ("sender_id", sender.sender_id),
        ("username", sender.username),
        ("token", sender.masked_token()),
        ("click_tracking", sender.click_tracking.value),
        ("dlt_entity_id", sender.dlt_entity_id or "(not set: +91 messages will be rejected)"),
        ("rate_per_s", f"{sender.rate_per_s:g}"),
        ("tracking_url", settings.tracking_url(sender.tracking_path())),
    ]
    for key, value in rows:
        click.echo(f"{key:<15} {value}")


@senders_group.command("set")
@click.argument("name")
@click.option("--click-tracking", type=click.Choice([c.value for c in ClickTracking]))
@click.option("--rate-per-s", type=float)
@click.option("--dlt-entity-id")
def set_sender(name: str, click_tracking: str | None, rate_per_s: float | None,
               dlt_entity_id: str | None) -> None:
    """Change click tracking, rate or DLT entity id of sender NAME."""
    settings = load_settings()
    senders = read_senders(settings)
    current = senders.named(name)
    changes = {k: v for k, v in {"click_tracking": click_tracking, "rate_per_s": rate_per_s,
                                 "dlt_entity_id": dlt_entity_id}.items() if v is not None}
    if not changes:
        raise CliError("nothing to change: give --click-tracking, --rate-per-s or --dlt-entity-id")
    try:
        fields = {**current.model_dump(), **changes, "token": current.token}
        updated = Sender.model_validate(fields)
    except ValidationError as exc:
        raise CliError(f"sender {name!r}: " + "; ".join(describe(exc))) from None
    save_senders(settings.senders_file, senders.replace(updated))
    click.echo(f"updated sender {name}: " + ", ".join(f"{k}={v}" for k, v in changes.items()))


@senders_group.command("default")
@click.argument("name")
def default_sender(name: str) -> None:
    """Make NAME the default sender."""
    settings = load_settings()
    save_senders(settings.senders_file, read_senders(settings).with_default(name))
    click.echo(f"default sender is now {name}")


@senders_group.command("remove")
@click.argument("name")
@click.option("--new-default", metavar="NAME", help="The new default when removing the default.")
def remove_sender(name: str, new_default: str | None) -> None:
    """Remove sender NAME."""
    settings = load_settings()
    updated = read_senders(settings).remove(name, new_default)
    save_senders(settings.senders_file, updated)
    click.echo(f"removed sender {name}" + (f"; default is now {updated.default}"
                                           if new_default else ""))


async def _send_one(settings: Settings, sender: Sender, to: str, text: str,
                    template: str | None) -> SubmitResult:
    signer = SmsgidSigner(settings.callback_secret.get_secret_value() or "senders-test")
    smsgid = signer.sign(f"test-{uuid.uuid4().hex[:12]}", sender.name)
    record = IcsClient.record(to, sender.sender_id, text, smsgid, sender.dlt_entity_id,
                              template)
    request = IcsClient.build(sender.username, [record],
                              dlrurl=settings.tracking_url(sender.tracking_path()),
                              urlshortening=sender.click_tracking is ClickTracking.ICS)
    async with aiohttp.ClientSession() as http:
        client = IcsClient(http, str(settings.ics_url), settings.ics_timeout_s)
        return await client.submit(request, sender.resolve_token())


@senders_group.command("test")
@click.argument("name")
@click.option("--to", required=True, help="Recipient in E.164, e.g. +919812345678.")
@click.option("--text", required=True, help="Message text.")
@click.option("--dlt-template-id", help="DLT template id (needed for +91 numbers).")
def test_sender(name: str, to: str, text: str, dlt_template_id: str | None) -> None:
    """Send one SMS through ICS (ICS_SMS_ICS_URL) now and print what ICS answered."""
    settings = load_settings()
    senders = read_senders(settings)
    sender = senders.named(name)
    try:
        number = normalize_e164(to)
    except InvalidNumber as exc:
        raise CliError(f"--to {to!r}: {exc}") from None
    if number.startswith("+91") and not (sender.dlt_entity_id and dlt_template_id):
        raise CliError("+91 numbers need the sender's --dlt-entity-id and --dlt-template-id")
    result = asyncio.run(_send_one(settings, sender, number, text, dlt_template_id))
    if not result.ok:
        raise CliError(f"ICS did not accept the request: {result.reason}")
    info = analyse(text)
    for answer in result.results.values():
        if not answer.accepted:
            raise CliError(f"ICS refused the message: {answer.error}")
        click.echo(f"accepted by ICS: mid={answer.mid} to={answer.to} "
                   f"segments={info.segments} encoding={info.encoding.value} "
                   f"({result.latency_s * 1000:.0f} ms)")
