"""``ics-sms campaigns`` and ``ics-sms messages``: what happened, read from the message store.

The counts are the message store's own (kept by the transitions that send and settle each
message, see :mod:`ics_sms.stores.history`), so they agree with what was sent at every
moment. Phone numbers are shown to the operator who asks; they are never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ics_sms.cli.common import CliError, age_option, load_settings
from ics_sms.schemas.phone import InvalidNumber, normalize_e164
from ics_sms.schemas.settings import Settings
from ics_sms.stores.history import (
    COUNTED_STATES,
    CampaignCounts,
    MessageView,
    duration_text,
    failure_meaning,
)
from ics_sms.stores.messages import MessageStore, MessageStoreError, open_message_store

__all__ = ["campaign_json", "campaigns_group", "message_json", "messages_group"]

T = TypeVar("T")


def _read(settings: Settings, read: Callable[[MessageStore], Awaitable[T]]) -> T:
    """One read of the message store (a one-line error when it cannot answer)."""
    if settings.redis_url.startswith("memory://"):
        raise CliError("ICS_SMS_REDIS_URL is memory://: the message store lives inside the "
                       "worker process; point ICS_SMS_REDIS_URL at the workers' Redis")

    async def run() -> T:
        async with open_message_store(settings) as store:
            return await read(store)

    try:
        return asyncio.run(run())
    except MessageStoreError as exc:
        raise CliError(str(exc)) from None


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


def campaign_json(c: CampaignCounts) -> dict[str, Any]:
    """A campaign as ``--json`` prints it (and the console serves it)."""
    return {
        "campaign_id": c.campaign_id, "published": c.published, "reached": c.reached,
        "total": c.total, "waiting": c.waiting,
        "states": {s: c.count(s) for s in COUNTED_STATES},
        "finals": c.finals, "progress": round(c.progress, 4),
        "failure_codes": [{"code": code, "count": n, "meaning": failure_meaning(code)}
                          for code, n in sorted(c.failure_codes.items(), key=lambda kv: -kv[1])],
        "segments": c.segments, "clicks": c.clicks, "unique_clicks": c.unique_clicks,
        "rate_per_s": round(c.rate_per_s, 2), "eta_s": c.eta_s,
        "first_at": _iso(c.first_at), "last_at": _iso(c.last_at),
    }


def message_json(m: MessageView) -> dict[str, Any]:
    value = asdict(m)
    value["created_at"] = _iso(m.created_at)
    value["timeline"] = [{"at": _iso(e.at), "state": e.state, "attempt": e.attempt,
                          "note": e.note} for e in m.timeline]
    return value


def _print_json(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _bar(progress: float, width: int = 20) -> str:
    done = round(progress * width)
    return "#" * done + "." * (width - done) + f" {progress:6.1%}"


def _campaigns_table(campaigns: list[CampaignCounts]) -> Table:
    table = Table(title="Campaigns (most recent activity first)")
    for name in ("campaign", "progress", "total", "waiting", "submitted", "uncertain",
                 "delivered", "failed", "rejected", "expired", "clicked", "rate/s", "ETA",
                 "last activity"):
        table.add_column(name, justify="left" if name in ("campaign", "progress") else "right")
    for c in campaigns:
        table.add_row(c.campaign_id, _bar(c.progress, 10), str(c.total), str(c.waiting),
                      str(c.count("submitted")), str(c.count("uncertain")),
                      str(c.count("delivered")), str(c.count("failed")),
                      str(c.count("rejected")), str(c.count("expired")),
                      str(c.unique_clicks), f"{c.rate_per_s:.1f}", duration_text(c.eta_s),
                      _when(c.last_at))
    return table


def _campaign_panel(c: CampaignCounts) -> Group:
    head = Text()
    head.append(f"Campaign {c.campaign_id}\n", style="bold")
    head.append(f"{_bar(c.progress)}  {c.finals} of {c.total} final\n")
    head.append(f"published {c.published or '(not announced)'}, reached by workers "
                f"{c.reached}, waiting {c.waiting} (queues, promotional window, rate)\n")
    head.append(f"segments sent (billed by ICS): {c.segments}   clicks: {c.clicks} "
                f"({c.unique_clicks} messages)\n")
    head.append(f"rate now: {c.rate_per_s:.1f}/s   ETA: {duration_text(c.eta_s)}   first: "
                f"{_when(c.first_at)}   last: {_when(c.last_at)} UTC")
    states = Table(title="Messages by state")
    states.add_column("state")
    states.add_column("messages", justify="right")
    for state in COUNTED_STATES:
        states.add_row(state, str(c.count(state)))
    parts: list[Any] = [head, states]
    if c.failure_codes:
        codes = Table(title="Failure codes")
        codes.add_column("code")
        codes.add_column("messages", justify="right")
        codes.add_column("meaning")
        for code, n in sorted(c.failure_codes.items(), key=lambda kv: -kv[1]):
            codes.add_row(code, str(n), failure_meaning(code))
        parts.append(codes)
    return Group(*parts)


def _watch(render: Callable[[], Any], every_s: float) -> None:
    console = Console()
    try:
        with Live(render(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every_s)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        pass


_WATCH = click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
_EVERY = click.option("--every", default=2.0, show_default=True, type=click.FloatRange(0.2),
                      help="Seconds between refreshes with --watch.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("campaigns", invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="How many campaigns (most recent activity first).")
@_WATCH
@_EVERY
@_JSON
@click.pass_context
def campaigns_group(ctx: click.Context, limit: int, watch: bool, every: float,
                    as_json: bool) -> None:
    """Recent campaigns with their counts; `campaigns show ID` for one.

    Counts come from the per-message records (the same atomic transitions that send and
    settle each message): waiting = published (announced by `ics-sms publish`) but not
    yet handed to ICS; uncertain = handed to ICS, answer pending or lost (never sent
    again); clicked = messages with at least one click.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()

    def read() -> list[CampaignCounts]:
        return _read(settings, lambda store: store.campaigns(limit))

    if as_json:
        _print_json([campaign_json(c) for c in read()])
    elif watch:
        _watch(lambda: _campaigns_table(read()), every)
    else:
        campaigns = read()
        if not campaigns:
            click.echo("no campaigns in the message store (yet)")
            return
        Console().print(_campaigns_table(campaigns))


@campaigns_group.command("show")
@click.argument("campaign_id")
@_WATCH
@_EVERY
@_JSON
def show_campaign(campaign_id: str, watch: bool, every: float, as_json: bool) -> None:
    """One campaign: counts by state, failure codes with ICS's meaning, segments, rate, ETA."""
    settings = load_settings()

    def read() -> CampaignCounts:
        found = _read(settings, lambda store: store.campaign(campaign_id))
        if found is None:
            raise CliError(f"no campaign {campaign_id!r} in the message store (unknown, or "
                           f"older than the retention of {settings.retention_s // 86400} days)")
        return found

    if as_json:
        _print_json(campaign_json(read()))
    elif watch:
        _watch(lambda: _campaign_panel(read()), every)
    else:
        Console().print(_campaign_panel(read()))


# -- messages -------------------------------------------------------------------------------


def _timeline(m: MessageView) -> Group:
    head = Text()
    head.append(f"Message {m.message_id}: {m.state}\n", style="bold")
    head.append(f"campaign {m.campaign_id or '-'}   to {m.to or '-'}   sender "
                f"{m.sender or '-'}   attempt {m.attempt}   segments {m.segments or '-'}\n")
    head.append(f"ICS message id {m.provider_message_id or '-'}   clicks {m.clicks}")
    if m.final.get("error_code"):
        code = m.final["error_code"]
        head.append(f"\nerror {code} ({failure_meaning(code)}): {m.final.get('error', '')}")
    table = Table(title="Timeline (UTC)")
    for name in ("time", "state", "attempt", "detail"):
        table.add_column(name)
    for e in m.timeline:
        detail = e.note
        if e.note and e.state in ("failed", "rejected", "expired"):
            detail = f"{e.note} ({failure_meaning(e.note)})"
        table.add_row(_when(e.at), e.state, str(e.attempt), detail)
    return Group(head, table)


@click.group("messages")
def messages_group() -> None:
    """One message's timeline, or a phone number's recent messages."""


@messages_group.command("show")
@click.argument("message_id")
@_JSON
def show_message(message_id: str, as_json: bool) -> None:
    """The timeline of MESSAGE_ID: each state with its time, attempt, ICS's message id,
    error and clicks."""
    settings = load_settings()
    found = _read(settings, lambda store: store.message(message_id))
    if found is None:
        raise CliError(f"no message {message_id!r} in the message store (never reached a "
                       f"worker, or older than {settings.retention_s // 86400} days)")
    if as_json:
        _print_json(message_json(found))
    else:
        Console().print(_timeline(found))


@messages_group.command("find")
@click.option("--to", "to", required=True, help="The phone number (E.164, e.g. +9198...).")
@click.option("--since", help="Only messages at most this old (90s, 30m, 2h, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_JSON
def find_messages(to: str, since: str | None, limit: int, as_json: bool) -> None:
    """A phone number's recent messages, newest first (indexed when a worker first takes a
    message; kept for the retention period, ICS_SMS_RETENTION_S)."""
    settings = load_settings()
    try:
        phone = normalize_e164(to)
    except InvalidNumber as exc:
        raise CliError(f"--to: {exc}") from None
    age = age_option("--since", since)
    since_at = time.time() - age if age is not None else None
    found = _read(settings, lambda store: store.find(phone, since=since_at, limit=limit))
    if as_json:
        _print_json([message_json(m) for m in found])
        return
    if not found:
        click.echo(f"no messages to {phone} in the message store"
                   + (f" in the last {since}" if since else ""))
        return
    table = Table(title=f"Messages to {phone} (newest first)")
    for name in ("taken", "message_id", "campaign", "state", "sender", "ICS id", "error"):
        table.add_column(name)
    for m in found:
        table.add_row(_when(m.created_at), m.message_id, m.campaign_id or "-", m.state,
                      m.sender or "-", m.provider_message_id or "-",
                      m.final.get("error_code", "") or "")
    Console().print(table)
