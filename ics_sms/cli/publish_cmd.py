"""``ics-sms publish FILE``: check a CSV or JSON Lines campaign, then publish it with progress.

The whole file is checked first (a streaming pass) so that a bad row never leaves a campaign
half published; then a second streaming pass publishes the valid rows with publisher
confirms. Message ids are stable (given in the file, or derived from the campaign id, the
row's content and its line), so publishing a file again after an interruption publishes the
same ids and the workers send each message once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ics_sms.cli.common import CliError, load_settings, read_senders
from ics_sms.producers.campaign import (
    CampaignCheck,
    CampaignDefaults,
    CampaignFileError,
    CampaignFormat,
    Rules,
    check_campaign,
    read_campaign,
    valid_requests,
)
from ics_sms.producers.errors import ProducerError, PublishError
from ics_sms.producers.publisher import OnProgress, Producer
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane, Senders, request_problems
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import MessageStoreError, open_message_store
from ics_sms.workers.window import PromoWindow

__all__ = ["publish_command"]

MAX_ROWS_LISTED = 20
PLAIN_PROGRESS_INTERVAL_S = 5.0


class _RateColumn(ProgressColumn):
    """Messages per second, as rich estimates it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? msgs/s" if speed is None else f"{speed:,.0f} msgs/s",
                    style="progress.data.speed")


class _PlainProgress:
    """A line every few seconds, for logs and pipes."""

    def __init__(self, total: int, interval_s: float = PLAIN_PROGRESS_INTERVAL_S) -> None:
        self._total = total
        self._interval_s = interval_s
        self._started = self._last = time.monotonic()

    def __call__(self, confirmed: int) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s or confirmed >= self._total:
            return
        self._last = now
        rate = confirmed / max(now - self._started, 1e-9)
        click.echo(f"published {confirmed}/{self._total} ({confirmed / self._total:.0%}), "
                   f"{rate:,.0f} msgs/s")


@contextmanager
def _progress(total: int, console: Console | None) -> Iterator[OnProgress]:
    """A rich progress bar on a terminal, plain lines otherwise."""
    if console is None:
        yield _PlainProgress(total)
        return
    columns = (TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("publishing", total=total)
        yield lambda confirmed: bar.update(task, completed=confirmed)


def _lanes(counts: Counter[str | None], senders: Senders) -> Counter[Lane]:
    lanes: Counter[Lane] = Counter({lane: 0 for lane in Lane})
    for name, count in counts.items():
        sender = senders.get(name)
        lanes[Lane.SERVICE if sender is None else sender.lane] += count
    return lanes


def _lanes_text(lanes: Counter[Lane]) -> str:
    return ", ".join(f"{lane.value} {lanes[lane]}" for lane in Lane)


def _rules(senders: Senders) -> Rules:
    """What the workers check of each request, checked before anything is published."""
    def problems(request: SendRequest) -> Sequence[str]:
        return request_problems(request, senders)
    return problems


def _warn_outside_window(counts: Counter[str | None], senders: Senders, settings: Settings,
                         now: datetime) -> None:
    """Promotional messages published while the window is closed wait for it: say so."""
    window = PromoWindow.of(settings.promo_window_start, settings.promo_window_end,
                            settings.promo_timezone)
    if window.is_open(now):
        return
    opens = (now + timedelta(seconds=window.seconds_until_change(now))).astimezone(window.zone)
    for name, count in sorted(counts.items(), key=lambda item: str(item[0])):
        sender = senders.get(name)
        if sender is None or sender.lane is not Lane.PROMOTIONAL:
            continue
        click.echo(f"warning: {count} message(s) of promotional sender {sender.name!r}: the "
                   f"promotional window ({window.start:%H:%M}-{window.end:%H:%M} "
                   f"{settings.promo_timezone}) is closed; the workers hold them until it "
                   f"opens at {opens:%Y-%m-%d %H:%M %Z}", err=True)


def _check(path: Path, fmt: CampaignFormat | None, defaults: CampaignDefaults,
           console: Console | None, rules: Rules, *, skip_invalid: bool) -> CampaignCheck:
    """The first pass: report what is wrong; stop unless told to skip invalid rows."""
    started = time.monotonic()
    status = console.status(f"checking {path}...") if console else nullcontext()
    try:
        with status:
            check = check_campaign(path, fmt, defaults, max_rows_listed=MAX_ROWS_LISTED,
                                   rules=rules)
    except CampaignFileError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"checked {path}: {check.rows} rows, {check.valid} valid, {check.invalid} "
               f"invalid ({time.monotonic() - started:.2f} s)")
    _report_problems(check)
    if check.invalid and not skip_invalid:
        raise CliError(f"{path}: {check.invalid} invalid row(s); nothing published (fix them, "
                       "or publish the valid rows with --skip-invalid)")
    return check


def _report_problems(check: CampaignCheck) -> None:
    for problem in check.problems:
        click.echo(problem, err=True)
    if check.unlisted:
        click.echo(f"... and {check.unlisted} more invalid row(s)", err=True)


def _publish(settings: Settings, senders: Senders, path: Path, fmt: CampaignFormat | None,
             defaults: CampaignDefaults, rules: Rules, total: int,
             console: Console | None) -> int:
    confirmed = 0

    def progress(count: int) -> None:
        nonlocal confirmed
        confirmed = count
        report(count)

    campaigns: Counter[str] = Counter()

    def counted(requests: Iterator[SendRequest]) -> Iterator[SendRequest]:
        for request in requests:
            campaigns[request.campaign_id] += 1
            yield request

    requests = counted(valid_requests(read_campaign(path, fmt, defaults, rules)))
    try:
        producer = Producer.from_settings(settings, senders, connection_name="ics-sms publish")
        with producer, _progress(total, console) as report:
            published = producer.publish_many(requests, on_progress=progress)
        _announce(settings, campaigns, _source(path, defaults))
        return published
    except PublishError as exc:
        raise CliError(
            f"publishing stopped after {exc.confirmed} of {total} messages: {exc.reason}; "
            "publishing the file again is safe (message ids are stable)"
        ) from None
    except ProducerError as exc:  # unreachable broker, topology conflict, file gone...
        raise CliError(f"{exc} ({confirmed} of {total} messages published)" if confirmed
                       else str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: {confirmed} of {total} messages published; publishing the "
                   "file again is safe (message ids are stable)", err=True)
        raise click.exceptions.Exit(130) from None


def _source(path: Path, defaults: CampaignDefaults) -> str:
    """What makes a publish of this file the same publish again: its bytes and the
    defaults applied to it (the same file published again announces the same messages)."""
    digest = hashlib.blake2b(digest_size=10)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(repr(sorted(defaults.items())).encode())
    return digest.hexdigest()


def _announce(settings: Settings, campaigns: Counter[str], source: str) -> None:
    """Tell the message store how many messages each campaign got (``ics-sms campaigns``
    shows them as published before the workers reach them). Best effort: publishing has
    succeeded; a store that cannot answer only leaves ``published`` unknown."""
    if settings.redis_url.startswith("memory://"):
        return

    async def announce() -> None:
        async with open_message_store(settings) as store:
            for campaign_id, count in campaigns.items():
                await store.announce(campaign_id, count, source=source)

    try:
        asyncio.run(announce())
    except MessageStoreError as exc:
        click.echo(f"warning: campaign counts not announced to the message store: {exc}",
                   err=True)


@click.command("publish")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--format", "fmt", type=click.Choice([f.value for f in CampaignFormat]),
              help="csv or jsonl; by default from the extension (.csv, .jsonl, .ndjson).")
@click.option("--campaign-id", help="Campaign id of rows that give none.")
@click.option("--sender", help="Sender name of rows that give none (else the default sender).")
@click.option("--text", help="Text of rows that give none.")
@click.option("--dlt-template-id", help="DLT template id of rows that give none.")
@click.option("--skip-invalid", is_flag=True,
              help="Publish the valid rows and report the invalid ones (default: publish "
                   "nothing when any row is invalid).")
@click.option("--dry-run", is_flag=True, help="Check the file only; publish nothing.")
def publish_command(file: Path, fmt: str | None, campaign_id: str | None, sender: str | None,
                    text: str | None, dlt_template_id: str | None, skip_invalid: bool,
                    dry_run: bool) -> None:
    """Publish the send requests of FILE, a CSV or JSON Lines campaign.

    CSV columns (header row): message_id, campaign_id, to, text, sender, dlt_template_id,
    expires_at, metadata (a JSON object) and metadata.KEY; an empty cell is a missing
    value. JSON Lines: one SendRequest object per line.

    Rows are also checked as the workers will check them: an unknown or disabled sender,
    and for +91 numbers a sender with a DLT entity id and a dlt_template_id, are row
    errors. Promotional messages outside the promotional window are published with a
    warning: the workers hold them until the window opens.

    A message_id repeated in the file is an error on every later row. A missing message_id
    becomes CAMPAIGN-DIGEST-LINE, DIGEST covering the row's content with the defaults
    applied: the same file with the same options gives the same ids on every run (the
    workers send each message once); rows that differ in campaign, content or line never
    share an id. Editing a row in place gives it a new id (it is sent; the others are not
    sent again); inserting or deleting rows renews the ids of the rows below: append
    instead, or give message_id. To send a file again on purpose, use a new --campaign-id.
    """
    settings = load_settings()
    senders = read_senders(settings)
    kind = CampaignFormat(fmt) if fmt else None
    defaults = CampaignDefaults(campaign_id=campaign_id, sender=sender, text=text,
                                dlt_template_id=dlt_template_id)
    console = Console() if sys.stdout.isatty() else None

    rules = _rules(senders)
    check = _check(file, kind, defaults, console, rules, skip_invalid=skip_invalid)
    _warn_outside_window(check.senders, senders, settings, datetime.now(UTC))
    lanes = _lanes_text(_lanes(check.senders, senders))
    if dry_run:
        click.echo(f"dry run: {check.valid} message(s) would be published ({lanes}); "
                   "nothing was sent")
    elif not check.valid:
        click.echo("nothing to publish")
    else:
        click.echo(f"publishing {check.valid} message(s) to {settings.broker_url_redacted} "
                   f"(namespace {settings.namespace or '(none)'})")
        started = time.monotonic()
        published = _publish(settings, senders, file, kind, defaults, rules, check.valid,
                             console)
        elapsed = time.monotonic() - started
        click.echo(f"published {published} message(s) ({lanes}) in {elapsed:.2f} s, "
                   f"{published / max(elapsed, 1e-9):,.0f} msgs/s"
                   + (f"; skipped {check.invalid} invalid row(s)" if check.invalid else ""))
