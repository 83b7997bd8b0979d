"""``ics-sms senders``: configure the ICS senders, in whichever source the settings name.

Every command goes through :func:`~ics_sms.stores.senders.open_sender_source`: it loads the
whole configuration with its version, changes it with the pure :class:`Senders` methods and
saves it against that version, so two operators (or a console) never overwrite each other
silently: the second is told to run the command again.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import SecretStr, ValidationError

from ics_sms.cli.common import CliError, load_settings, open_senders
from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest, Status
from ics_sms.schemas.senders import (
    ClickTracking,
    Sender,
    Senders,
    SenderType,
    dump_senders,
    load_senders,
    save_senders,
)
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology
from ics_sms.stores.senders import SenderSource, Snapshot
from ics_sms.workers.encoding import TextInfo
from ics_sms.workers.ics import SubmitResult
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.trial import (
    MAX_TEST_SEGMENTS,
    TrialRefused,
    prepare,
    send,
)

__all__ = ["senders_group"]


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@click.group("senders")
def senders_group() -> None:
    """List, add, change, disable, remove, import and export senders."""


# -- loading and saving ---------------------------------------------------------------------
def _actor() -> str:
    """Who changes the configuration, for the audit trail: user@host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@contextmanager
def _source(settings: Settings) -> Iterator[tuple[SenderSource, Snapshot]]:
    source, snapshot = open_senders(settings)
    try:
        yield source, snapshot
    finally:
        source.close()


def _save(source: SenderSource, snapshot: Snapshot, senders: Senders, action: str) -> Snapshot:
    """Save ``senders`` if nobody changed the source since ``snapshot`` was read."""
    return source.save(senders, expected=snapshot.version, actor=_actor(), action=action)


def _now() -> datetime:
    return datetime.now(UTC)


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _validated(name: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except ValidationError as exc:
        raise CliError(f"sender {name!r}: " + "; ".join(describe(exc))) from None


# -- token options (shared by add and set) --------------------------------------------------
def _token_options(command: F) -> F:
    options = [
        click.option("--token-stdin", is_flag=True,
                     help="Read the ICS token from the first line of standard input."),
        click.option("--token", metavar="-", help="Same as --token-stdin (only '-' is taken)."),
        click.option("--token-env", metavar="VAR",
                     help="Read the ICS token from env VAR at run time."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Read the ICS token from this file at run time."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _token_from_options(token: str | None, token_stdin: bool, token_env: str | None,
                        token_file: Path | None, *, required: bool) -> dict[str, Any]:
    if token is not None and token != "-":
        raise CliError("--token takes only '-' (read the token from standard input), "
                       "so that it never appears in the shell history")
    stdin = token_stdin or token is not None
    given = [o for o in (stdin or None, token_env, token_file) if o is not None]
    if not given and not required:
        return {}
    if len(given) != 1:
        raise CliError("give exactly one of --token-stdin, --token-env VAR or "
                       "--token-file PATH")
    if stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise CliError("--token-stdin: standard input held no token")
        return {"token": SecretStr(value)}
    if token_env is not None:
        return {"token_env": token_env}
    assert token_file is not None
    return {"token_file": token_file.resolve()}


def _shown(key: str, value: Any, sender: Sender) -> str:
    if key in ("token", "token_env", "token_file"):
        return f"token={sender.masked_token()}"
    if isinstance(value, ClickTracking | SenderType):
        value = value.value
    return f"{key}={value}"


# -- list / show ----------------------------------------------------------------------------
@senders_group.command("list")
def list_senders() -> None:
    """List the senders (the default marked *), disabled ones with their reason, and
    removed senders whose tracking URL still accepts receipts."""
    settings = load_settings()
    with _source(settings) as (_, snapshot):
        senders = snapshot.senders
    now = _now()
    retired = senders.in_grace(now, settings.senders_grace_s)
    if not len(senders):
        click.echo("no senders configured: add one with `ics-sms senders add`")
    for sender in senders:
        mark = "*" if sender.name == senders.default else " "
        state = f"  DISABLED: {sender.disabled}" if sender.disabled is not None else ""
        click.echo(
            f"{mark} {sender.name:<20} {sender.type.value:<17} {sender.sender_id}  "
            f"clicks={sender.click_tracking.value}  rate={sender.rate_per_s:g}/s{state}"
        )
    if retired:
        click.echo("removed (their tracking URLs still accept receipts):")
        for gone in retired:
            until = gone.removed_at + timedelta(seconds=settings.senders_grace_s)
            click.echo(f"  {gone.name:<20} removed {_when(gone.removed_at)}, "
                       f"receipts accepted until {_when(until)}")


@senders_group.command("show")
@click.argument("name")
def show_sender(name: str) -> None:
    """Show every field of sender NAME (token masked) and its delivery tracking URL."""
    settings = load_settings()
    with _source(settings) as (_, snapshot):
        senders = snapshot.senders
    if name not in senders.senders:
        retired = [r for r in senders.in_grace(_now(), settings.senders_grace_s)
                   if r.name == name]
        if retired:
            gone = retired[-1]
            until = gone.removed_at + timedelta(seconds=settings.senders_grace_s)
            for key, value in (
                ("name", name),
                ("state", f"removed {_when(gone.removed_at)}"),
                ("receipts", f"accepted until {_when(until)}"),
                ("tracking_url", settings.tracking_url(f"/ics/{gone.tracking_token}/receipts")),
            ):
                click.echo(f"{key:<16} {value}")
            return
    sender = senders.named(name)
    resend = {None: "no (not set)", True: "yes", False: "no"}[sender.resend_uncertain]
    rows = [
        ("name", sender.name),
        ("default", "yes" if senders.default == name else "no"),
        ("state", "enabled" if sender.disabled is None else f"DISABLED: {sender.disabled}"),
        ("type", sender.type.value),
        ("lane", sender.lane.value),
        ("sender_id", sender.sender_id),
        ("username", sender.username),
        ("token", sender.masked_token()),
        ("click_tracking", sender.click_tracking.value),
        ("dlt_entity_id", sender.dlt_entity_id or "(not set: +91 messages will be rejected)"),
        ("rate_per_s", f"{sender.rate_per_s:g}"),
        ("resend_uncertain", resend),
        ("tracking_url", settings.tracking_url(sender.tracking_path())),
    ]
    for key, value in rows:
        click.echo(f"{key:<16} {value}")


# -- add / set ------------------------------------------------------------------------------
_resend_help = ("Send again a message ICS may or may not have accepted (an OTP may be worth "
                "a duplicate; a promotion never is).")


@senders_group.command("add")
@click.argument("name")
@click.option("--type", "type_", required=True,
              type=click.Choice([t.value for t in SenderType]), help="Sender type.")
@click.option("--sender-id", required=True,
              help="DLT header: 6 letters (stored upper case), 6 digits if promotional.")
@click.option("--username", required=True, help="ICS account user.")
@_token_options
@click.option("--click-tracking", type=click.Choice([c.value for c in ClickTracking]),
              default=ClickTracking.OFF.value, show_default=True,
              help="Who shortens links and tracks clicks.")
@click.option("--dlt-entity-id", help="DLT Principal Entity ID (19 digits), needed for +91.")
@click.option("--rate-per-s", type=float, default=100.0, show_default=True,
              help="Most submissions per second ICS allows this sender.")
@click.option("--resend-uncertain/--no-resend-uncertain", default=None, help=_resend_help)
def add_sender(name: str, type_: str, sender_id: str, username: str, token: str | None,
               token_stdin: bool, token_env: str | None, token_file: Path | None,
               click_tracking: str, dlt_entity_id: str | None, rate_per_s: float,
               resend_uncertain: bool | None) -> None:
    """Add sender NAME; the first sender added becomes the default."""
    settings = load_settings()
    with _source(settings) as (source, snapshot):
        fields = {"name": name, "type": type_, "sender_id": sender_id, "username": username,
                  "click_tracking": click_tracking, "dlt_entity_id": dlt_entity_id,
                  "rate_per_s": rate_per_s, "resend_uncertain": resend_uncertain}
        tokens = _token_from_options(token, token_stdin, token_env, token_file, required=True)
        sender = _validated(name, lambda: Sender.model_validate({**fields, **tokens}))
        updated = snapshot.senders.add(sender)
        _save(source, snapshot, updated, f"senders add {name}")
    default = " (the default sender)" if updated.default == name else ""
    click.echo(f"added sender {name}{default}")
    click.echo(f"delivery tracking URL: {settings.tracking_url(sender.tracking_path())}")


@senders_group.command("set")
@click.argument("name")
@click.option("--type", "type_", type=click.Choice([t.value for t in SenderType]),
              help="Sender type (the sender id must fit it: give --sender-id too).")
@click.option("--sender-id", help="DLT header: 6 letters (stored upper case), 6 digits if "
                                  "promotional.")
@click.option("--username", help="ICS account user.")
@_token_options
@click.option("--click-tracking", type=click.Choice([c.value for c in ClickTracking]),
              help="Who shortens links and tracks clicks.")
@click.option("--dlt-entity-id", help="DLT Principal Entity ID (19 digits).")
@click.option("--no-dlt-entity-id", is_flag=True, help="Remove the DLT entity id.")
@click.option("--rate-per-s", type=float, help="Most submissions per second.")
@click.option("--resend-uncertain/--no-resend-uncertain", default=None, help=_resend_help)
def set_sender(name: str, type_: str | None, sender_id: str | None, username: str | None,
               token: str | None, token_stdin: bool, token_env: str | None,
               token_file: Path | None, click_tracking: str | None, dlt_entity_id: str | None,
               no_dlt_entity_id: bool, rate_per_s: float | None,
               resend_uncertain: bool | None) -> None:
    """Change fields of sender NAME in place; its delivery tracking URL stays the same.

    Running workers pick the change up (ICS_SMS_SENDERS_RELOAD_S). The token is never
    given on the command line: --token-stdin, --token-env or --token-file.
    """
    if dlt_entity_id is not None and no_dlt_entity_id:
        raise CliError("give --dlt-entity-id or --no-dlt-entity-id, not both")
    changes: dict[str, Any] = {k: v for k, v in {
        "type": type_, "sender_id": sender_id, "username": username,
        "click_tracking": click_tracking, "dlt_entity_id": dlt_entity_id,
        "rate_per_s": rate_per_s, "resend_uncertain": resend_uncertain,
    }.items() if v is not None}
    if no_dlt_entity_id:
        changes["dlt_entity_id"] = None
    settings = load_settings()
    with _source(settings) as (source, snapshot):
        current = snapshot.senders.named(name)
        changes.update(_token_from_options(token, token_stdin, token_env, token_file,
                                           required=False))
        if not changes:
            raise CliError("nothing to change: give at least one option (see --help)")
        updated = _validated(name, lambda: current.changed(**changes))
        shown = ", ".join(_shown(k, getattr(updated, k), updated) for k in changes)
        _save(source, snapshot, snapshot.senders.replace(updated), f"senders set {name}: "
              + ", ".join(sorted({"token" if k.startswith("token") else k for k in changes})))
    click.echo(f"updated sender {name}: {shown}")
    if updated.lane is not current.lane:
        click.echo(f"its messages now go to the {updated.lane.value} lane (queued ones are "
                   "moved there by the workers)")


# -- disable / enable / default / remove ----------------------------------------------------
@senders_group.command("disable")
@click.argument("name")
@click.option("--reason", required=True, help="Why (shown in list, show and the logs).")
def disable_sender(name: str, reason: str) -> None:
    """Stop sending for sender NAME without removing it; its receipts are still accepted."""
    settings = load_settings()
    with _source(settings) as (source, snapshot):
        updated = _validated(name, lambda: snapshot.senders.disable(name, reason))
        _save(source, snapshot, updated, f"senders disable {name}")
    click.echo(f"disabled sender {name}: the workers send none of its messages until "
               f"`ics-sms senders enable {name}`")


@senders_group.command("enable")
@click.argument("name")
def enable_sender(name: str) -> None:
    """Send again for sender NAME."""
    settings = load_settings()
    with _source(settings) as (source, snapshot):
        if snapshot.senders.named(name).disabled is None:
            click.echo(f"sender {name} is not disabled")
            return
        _save(source, snapshot, snapshot.senders.enable(name), f"senders enable {name}")
    click.echo(f"enabled sender {name}")


@senders_group.command("default")
@click.argument("name")
def default_sender(name: str) -> None:
    """Make NAME the default sender."""
    settings = load_settings()
    with _source(settings) as (source, snapshot):
        _save(source, snapshot, snapshot.senders.with_default(name), f"senders default {name}")
    click.echo(f"default sender is now {name}")


@senders_group.command("remove")
@click.argument("name")
@click.option("--new-default", metavar="NAME", help="The new default when removing the default.")
def remove_sender(name: str, new_default: str | None) -> None:
    """Remove sender NAME; its tracking URL still accepts receipts for
    ICS_SMS_SENDERS_GRACE_S."""
    settings = load_settings()
    now = _now()
    with _source(settings) as (source, snapshot):
        updated = (snapshot.senders.remove(name, new_default, now=now)
                   .pruned(now, settings.senders_grace_s))
        _save(source, snapshot, updated, f"senders remove {name}")
    until = now + timedelta(seconds=settings.senders_grace_s)
    click.echo(f"removed sender {name}" + (f"; default is now {updated.default}"
                                           if new_default else ""))
    click.echo(f"its tracking URL accepts receipts until {_when(until)}")


# -- import / export / history --------------------------------------------------------------
@senders_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def import_senders(file: Path) -> None:
    """Make the senders of FILE (a senders TOML file) the configuration.

    A sender already configured keeps its tracking URL unless FILE gives a tracking_token;
    a configured sender missing from FILE is removed (its tracking URL still accepts
    receipts for ICS_SMS_SENDERS_GRACE_S).
    """
    if not file.is_file():
        raise CliError(f"{file}: no such file")
    given = load_senders(file)
    settings = load_settings()
    now = _now()
    with _source(settings) as (source, snapshot):
        current = snapshot.senders
        updated = current.imported(given, now).pruned(now, settings.senders_grace_s)
        _save(source, snapshot, updated, f"senders import {file.name}")
        where = source.description
    added = sorted(set(updated.senders) - set(current.senders))
    changed = sorted(n for n in set(updated.senders) & set(current.senders)
                     if updated.senders[n] != current.senders[n])
    removed = sorted(set(current.senders) - set(updated.senders))
    click.echo(f"imported {len(updated)} sender(s) from {file} into {where}: "
               f"added {', '.join(added) or 'none'}; changed {', '.join(changed) or 'none'}; "
               f"removed {', '.join(removed) or 'none'}")


@senders_group.command("export")
@click.argument("file", default="-", type=click.Path(dir_okay=False, allow_dash=True,
                                                     path_type=Path))
@click.option("--include-secrets", is_flag=True,
              help="Write inline ICS tokens too (only to a FILE, made owner-only, 0600).")
def export_senders(file: Path, include_secrets: bool) -> None:
    """Write the configuration as a senders TOML file to FILE (default: standard output).

    Tokens read from an environment variable or a file are written as that reference; an
    inline token is left out unless --include-secrets.
    """
    to_stdout = str(file) == "-"
    if include_secrets and to_stdout:
        raise CliError("--include-secrets writes only to a FILE (mode 0600), never to "
                       "standard output")
    settings = load_settings()
    with _source(settings) as (_, snapshot):
        senders = snapshot.senders
    if to_stdout:
        click.echo(dump_senders(senders, include_secrets=False), nl=False)
    else:
        try:
            save_senders(file, senders, include_secrets=include_secrets,
                         private=include_secrets)
        except OSError as exc:
            raise CliError(f"{file}: cannot write: {exc.strerror or exc}") from None
        click.echo(f"exported {len(senders)} sender(s) to {file}")
    left_out = [s.name for s in senders if s.token is not None and not include_secrets]
    if left_out:
        click.echo(f"warning: the inline token of {', '.join(left_out)} is left out: give "
                   "--include-secrets (FILE only), or move it to --token-env/--token-file; "
                   "without a token the export does not import", err=True)


@senders_group.command("history")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="How many changes, newest first.")
def senders_history(limit: int) -> None:
    """The latest changes of the senders: when, who, what (never a token)."""
    settings = load_settings()
    with _source(settings) as (source, _):
        entries = source.history(limit)
        where = source.description
    if not entries:
        click.echo(f"no change history in {where} (the PostgreSQL registry keeps one)")
        return
    for entry in entries:
        about = f" [{entry.sender}]" if entry.sender else ""
        detail = f": {entry.detail}" if entry.detail else ""
        click.echo(f"{_when(entry.at)}  {entry.actor}  {entry.action}{about}{detail}")


# -- test -----------------------------------------------------------------------------------
@senders_group.command("test")
@click.argument("name")
@click.option("--to", required=True, help="Recipient in E.164, e.g. +919812345678.")
@click.option("--text", required=True, help="Message text (checked like a send request).")
@click.option("--dlt-template-id", help="DLT template id (needed for +91 numbers).")
@click.option("--yes", "-y", "--force", "yes", is_flag=True,
              help=f"Send a text of more than {MAX_TEST_SEGMENTS} segments.")
@click.option("--outside-window", is_flag=True,
              help="Send from a promotional sender outside the promotional window.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome as the event a worker would publish (JSON).")
def test_sender(name: str, to: str, text: str, dlt_template_id: str | None, yes: bool,
                outside_window: bool, as_json: bool) -> None:
    """Send one SMS through ICS (ICS_SMS_ICS_URL) now and print what ICS answered.

    The message is checked like a campaign's: a valid send request, India's DLT rules,
    its segment count (more than a few needs --yes) and, for a promotional sender, the
    promotional window. Its receipts come back as events of campaign senders-test.
    """
    settings = load_settings()
    with _source(settings) as (_, snapshot):
        sender = snapshot.senders.named(name)
    try:
        trial = prepare(settings, sender, to=to, text=text, dlt_template_id=dlt_template_id,
                        now=_now(), outside_window=outside_window, many_segments=True)
    except TrialRefused as exc:
        raise CliError(_option_error(exc)) from None
    request, info = trial.request, trial.info
    if trial.warning:
        click.echo(f"warning: {trial.warning} because of --outside-window", err=True)
    click.echo(f"text: {len(request.text)} characters, {info.encoding.value}, "
               f"{info.segments} segment(s)", err=as_json)
    if info.segments > MAX_TEST_SEGMENTS and not yes:
        raise CliError(f"--text is {info.segments} segments (each billed as one SMS), more "
                       f"than {MAX_TEST_SEGMENTS}: pass --yes to send it")
    if sender.disabled is not None:
        click.echo(f"note: sender {name} is disabled ({sender.disabled}); the test is sent "
                   "anyway", err=True)
    sent = asyncio.run(send(settings, trial))
    result = sent.result
    if sent.unremembered is not None:
        click.echo(f"warning: the message context was not stored ({sent.unremembered}): its "
                   "receipt events will lack campaign_id, segments and encoding", err=True)
    _report(settings, request, sender, info, result, as_json)


def _option_error(exc: TrialRefused) -> str:
    """A refused test message as the CLI names its options."""
    if exc.field == "window":
        return f"{exc.reason}; pass --outside-window to send it now anyway"
    if exc.field in ("to", "text", "dlt_template_id"):
        return f"--{exc.field.replace('_', '-')}: {exc.reason}"
    return str(exc)


def _report(settings: Settings, request: SendRequest, sender: Sender, info: TextInfo,
            result: SubmitResult, as_json: bool) -> None:
    outcomes = Outcomes(Topology(settings.namespace, settings.queue_type))
    now = _now()

    def event(status: Status, **fields: Any) -> None:
        """The event a worker publishes for this outcome (the same builder)."""
        if as_json:
            message = outcomes.event(request, status, now, sender=sender.name, attempt=1,
                                     **fields)
            click.echo(message.body.decode())

    if not result.ok:
        event(Status.FAILED, error=result.reason, error_code="ics_request")
        raise CliError(f"ICS did not accept the request: {result.reason}")
    answer = next(iter(result.results.values()), None)
    if answer is None:
        raise CliError("ICS answered without a result for the message: it may or may not "
                       "be sent; watch for its receipt")
    if not answer.accepted:
        event(Status.REJECTED, error=answer.error, error_code="ics_refused")
        raise CliError(f"ICS refused the message: {answer.error}")
    event(Status.SUBMITTED, provider_message_id=answer.mid, segments=info.segments,
          encoding=info.encoding)
    if not as_json:
        click.echo(f"accepted by ICS: mid={answer.mid} to={answer.to} "
                   f"segments={info.segments} encoding={info.encoding.value} "
                   f"message_id={request.message_id} ({result.latency_s * 1000:.0f} ms)")
