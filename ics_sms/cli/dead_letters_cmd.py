"""``ics-sms dead-letters``: see what ended in the dead-letter queue, replay it, purge it.

The presentation only: reading, choosing, replaying and purging are
:mod:`ics_sms.workers.dead_letters` (shared with the operator console), whose docstring
says why reading never loses a dead letter and why replay sends a message at most once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from ics_sms.cli.common import CliError, age_option, load_settings
from ics_sms.workers.dead_letters import (
    HEADER_REPLAY,
    REPLAY_KEY,
    DeadLetterError,
    Selection,
    age_text,
    collect,
    counts_by_reason,
    purge,
    replay,
)

__all__ = ["HEADER_REPLAY", "REPLAY_KEY", "dead_letters_group"]

_T = TypeVar("_T")


@click.group("dead-letters")
def dead_letters_group() -> None:
    """List, show, replay and purge the dead letters (queue sms.dead).

    Dead letters are send requests that ended without being sent (refused, failed before
    ICS took them, expired) or that no worker could handle. Replay sends again those ICS
    certainly never got, once; purge removes them.
    """


# -- choosing dead letters ----------------------------------------------------------------------
def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--reason", "reasons", multiple=True,
                     help="Only dead letters with this reason (repeatable), e.g. "
                          "sender_unauthorized."),
        click.option("--sender", "senders", multiple=True,
                     help="Only requests naming this sender (repeatable; '(default)' for "
                          "those naming none)."),
        click.option("--campaign", "campaigns", multiple=True,
                     help="Only this campaign_id (repeatable)."),
        click.option("--older-than", help="Only dead letters older than this age "
                                          "(90s, 30m, 2h, 7d)."),
        click.option("--newer-than", help="Only dead letters at most this old."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(ids: Sequence[str], reasons: Sequence[str], senders: Sequence[str],
               campaigns: Sequence[str], older_than: str | None,
               newer_than: str | None) -> Selection:
    return Selection(frozenset(ids), frozenset(reasons), frozenset(senders),
                     frozenset(campaigns), age_option("--older-than", older_than),
                     age_option("--newer-than", newer_than))


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    try:
        return asyncio.run(work)
    except DeadLetterError as exc:
        raise CliError(str(exc)) from None


def _by_reason(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in counts.items())


def _json(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# -- list / show -------------------------------------------------------------------------------
@dead_letters_group.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="Show at most this many rows (the counts cover all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_dead_letters(reasons: tuple[str, ...], senders: tuple[str, ...],
                      campaigns: tuple[str, ...], older_than: str | None,
                      newer_than: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first, with counts by reason (numbers masked)."""
    settings = load_settings()
    selection = _selection((), reasons, senders, campaigns, older_than, newer_than)
    now = time.time()
    letters = _run(collect(settings, selection, now=now))
    counts = counts_by_reason(letters)
    if as_json:
        _json({"count": len(letters), "by_reason": counts,
               "dead_letters": [letter.summary(now) for letter in letters[:limit]]})
        return
    if not letters:
        click.echo("no dead letters" + ("" if selection.everything else " match"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MESSAGE_ID", "REASON", "AGE", "SENDER", "CAMPAIGN", "TO", "REPLAYS"):
        table.add_column(column)
    for letter in letters[:limit]:
        row = letter.summary(now)
        table.add_row(letter.message_id, letter.reason, age_text(letter.age_s(now)),
                      letter.sender or "(default)", letter.campaign or "-", row["to"] or "-",
                      str(letter.replays or ""))
    console = Console(highlight=False, soft_wrap=True)
    console.print(table)
    if len(letters) > limit:
        click.echo(f"... {len(letters) - limit} more (raise --limit to see them)")
    click.echo(f"{len(letters)} dead letter(s): {_by_reason(counts)}")


@dead_letters_group.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_dead_letter(message_id: str, as_json: bool) -> None:
    """Show the dead letters of MESSAGE_ID in full: number, text, headers, reason."""
    settings = load_settings()
    now = time.time()
    letters = _run(collect(settings, Selection(ids=frozenset({message_id})), now=now))
    if not letters:
        raise CliError(f"no dead letter with message_id {message_id!r}")
    details = [letter.detail(now) for letter in letters]
    if as_json:
        _json(details)
        return
    for index, detail in enumerate(details):
        if index:
            click.echo("")
        for key in ("message_id", "reason", "error", "dead_at", "source_queue", "sender",
                    "campaign_id", "to", "replays", "publish_id", "invalid"):
            value = detail[key]
            if key == "dead_at" and value:
                value = f"{value} ({age_text(detail['age_s'])} ago)"
            if value not in (None, ""):
                click.echo(f"{key:<13} {value}")
        click.echo(f"{'headers':<13} {orjson.dumps(detail['headers']).decode()}")
        click.echo(f"{'body':<13} {orjson.dumps(detail['body']).decode()}")


# -- replay --------------------------------------------------------------------------------------
@dead_letters_group.command("replay")
@click.argument("message_ids", nargs=-1)
@_filter_options
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def replay_dead_letters(message_ids: tuple[str, ...], reasons: tuple[str, ...],
                        senders: tuple[str, ...], campaigns: tuple[str, ...],
                        older_than: str | None, newer_than: str | None, everything: bool,
                        as_json: bool) -> None:
    """Send again the dead letters MESSAGE_IDS (or those the filters select) that ICS
    certainly never got: each at most once, however often this runs.

    The request goes back to its send queue as a new publish with a fresh attempt count;
    its events carry metadata.ics_replay (the replay number). A dead letter is removed only
    once the broker confirmed its replay; those not replayed stay, with the reason why.
    """
    settings = load_settings()
    selection = _selection(message_ids, reasons, senders, campaigns, older_than, newer_than)
    if selection.everything and not everything:
        raise CliError("name dead letters by message id or filter (--reason, --sender, "
                       "--campaign, --older-than, --newer-than), or pass --all")
    report = _run(replay(settings, selection))
    if as_json:
        _json(report.as_json())
        return
    for done in report.replayed:
        click.echo(f"replayed  {done.message_id}  ({done.reason}; replay {done.replay})")
    for kept in report.skipped:
        click.echo(f"kept      {kept.message_id}  ({kept.reason}): {kept.why}")
    click.echo(f"{len(report.replayed)} replayed, {len(report.skipped)} kept")


# -- purge ---------------------------------------------------------------------------------------
@dead_letters_group.command("purge")
@click.argument("message_ids", nargs=-1)
@_filter_options
@click.option("--all", "everything", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def purge_dead_letters(message_ids: tuple[str, ...], reasons: tuple[str, ...],
                       senders: tuple[str, ...], campaigns: tuple[str, ...],
                       older_than: str | None, newer_than: str | None, everything: bool,
                       yes: bool, as_json: bool) -> None:
    """Remove the dead letters MESSAGE_IDS (or those the filters select) for good, after
    showing how many and asking (--yes skips the question)."""
    settings = load_settings()
    selection = _selection(message_ids, reasons, senders, campaigns, older_than, newer_than)
    if selection.everything and not everything:
        raise CliError("name dead letters by message id or filter (--reason, --sender, "
                       "--campaign, --older-than, --newer-than), or pass --all")
    now = time.time()
    if not yes:
        found = _run(collect(settings, selection, now=now))
        if not found:
            click.echo("no dead letters match")
            return
        click.confirm(f"Purge {len(found)} dead letter(s) "
                      f"({_by_reason(counts_by_reason(found))})? They cannot be recovered",
                      abort=True, err=True)
    purged = dict(_run(purge(settings, selection, now=now)).most_common())
    if as_json:
        _json({"purged": sum(purged.values()), "by_reason": purged})
        return
    click.echo(f"purged {sum(purged.values())} dead letter(s)"
               + (f": {_by_reason(purged)}" if purged else ""))
