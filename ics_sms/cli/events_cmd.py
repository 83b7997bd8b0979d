"""``ics-sms events``: tail receipt events, pretty on a terminal or JSON lines for scripts."""

from __future__ import annotations

import asyncio
import os
import sys

import click
import structlog
from rich.console import Console
from rich.text import Text

from ics_sms.broker.base import BrokerError
from ics_sms.broker.connect import open_broker
from ics_sms.callbacks.serve import stop_on_signals
from ics_sms.callbacks.tail import EventFilter, EventSink, tail_events
from ics_sms.cli.common import CliError, load_settings
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.settings import Settings

__all__ = ["event_line", "events_command"]

log = structlog.get_logger(__name__)

_STYLES = {
    Status.SUBMITTED: "blue",
    Status.DELIVERED: "green",
    Status.FAILED: "red",
    Status.REJECTED: "red",
    Status.EXPIRED: "yellow",
    Status.CLICKED: "cyan",
}


def event_line(event: ReceiptEvent) -> Text:
    """One readable line: time, status, message, campaign, sender, then what went wrong."""
    line = Text()
    line.append(event.occurred_at.strftime("%Y-%m-%d %H:%M:%S"), style="dim")
    line.append(f"  {event.status.value:<9}", style=_STYLES.get(event.status, ""))
    line.append(f"  {event.message_id}", style="bold")
    line.append(f"  campaign={event.campaign_id or '-'}  sender={event.sender or '-'}")
    if event.error_code or event.error:
        line.append(f"  [{event.error_code or '?'}] {event.error or ''}".rstrip(), style="red")
    if event.url:
        line.append(f"  {event.url}", style="underline")
    return line


def _pretty_sink(console: Console) -> EventSink:
    def show(event: ReceiptEvent) -> None:
        if console.is_terminal:
            console.print(event_line(event), no_wrap=True, overflow="ellipsis", crop=True)
        else:
            console.print(event_line(event), soft_wrap=True)

    return show


def _json_sink(event: ReceiptEvent) -> None:
    sys.stdout.write(event.model_dump_json(exclude_none=True) + "\n")
    sys.stdout.flush()


def _ready(queue: str) -> None:
    log.info("tailing receipt events", queue=queue)


async def _tail(settings: Settings, event_filter: EventFilter, sink: EventSink,
                count: int | None) -> None:
    broker = await open_broker(settings, name="ics-sms events")
    try:
        await tail_events(broker, settings.topology, event_filter, sink, count=count,
                          stop=stop_on_signals(), on_ready=_ready)
    finally:
        await broker.close()


@click.command("events")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice([s.value for s in Status]),
              help="Only events of this status (repeatable).")
@click.option("--campaign", default=None, help="Only events of this campaign.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Exit after this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def events_command(statuses: tuple[str, ...], campaign: str | None, count: int | None,
                   as_json: bool) -> None:
    """Tail receipt events as they are published (from a private queue; the analytics
    queue is left alone). Stops on Ctrl-C, or after --count events."""
    settings = load_settings()
    event_filter = EventFilter(frozenset(Status(s) for s in statuses), campaign)
    sink = _json_sink if as_json else _pretty_sink(Console(highlight=False))
    try:
        asyncio.run(_tail(settings, event_filter, sink, count))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
