"""Live progress of the demo: a rich panel on a terminal, plain lines in a pipe."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ics_sms.demo.tracker import DemoTracker

__all__ = ["Display", "LiveDisplay", "PlainDisplay", "choose_display", "print_summary"]

_ROWS = [("published", "cyan"), ("submitted", "blue"), ("delivered", "green"),
         ("failed", "red"), ("rejected", "magenta"), ("clicked", "yellow")]


class Display(Protocol):
    def start(self, total: int) -> None: ...
    def update(self, tracker: DemoTracker) -> None: ...
    def stop(self) -> None: ...
    def note(self, text: str) -> None: ...


def _counts(tracker: DemoTracker) -> dict[str, int]:
    counts = {name: tracker.counts.get(name, 0) for name, _ in _ROWS}
    counts["published"] = len(tracker.published_at)
    return counts


class LiveDisplay:
    """Progress bars per status, refreshed in place."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description:>10}"), BarColumn(bar_width=40),
            TextColumn("{task.completed:>7,}/{task.total:,}"), TimeElapsedColumn(),
        )
        self._tasks: dict[str, TaskID] = {}
        self._live: Live | None = None

    def start(self, total: int) -> None:
        for name, colour in _ROWS:
            self._tasks[name] = self._progress.add_task(f"[{colour}]{name}", total=total)
        self._live = Live(Group(self._progress), console=self._console, refresh_per_second=8)
        self._live.start()

    def update(self, tracker: DemoTracker) -> None:
        for name, count in _counts(tracker).items():
            self._progress.update(self._tasks[name], completed=count)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()

    def note(self, text: str) -> None:
        self._console.print(text)


class PlainDisplay:
    """One line per second on stderr: for pipes and CI logs (stdout keeps only the
    summary, so ``ics-sms demo --json | jq`` reads pure JSON)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._total = 0

    def start(self, total: int) -> None:
        self._total = total

    def update(self, tracker: DemoTracker) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        counts = " ".join(f"{k}={v}" for k, v in _counts(tracker).items())
        click.echo(f"progress {counts} accounted={len(tracker.terminal)}/{self._total}",
                   err=True)

    def stop(self) -> None:
        return

    def note(self, text: str) -> None:
        click.echo(text, err=True)


def choose_display(quiet: bool) -> Display:
    if not quiet and sys.stdout.isatty():
        return LiveDisplay(Console())
    return PlainDisplay()


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table on a terminal, aligned plain text otherwise."""
    console = Console(highlight=False)
    table = Table(title="ics-sms demo summary", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("messages", f"{summary['messages']:,} published, "
                              f"{summary['accounted_for']:,} accounted for, "
                              f"{summary['unaccounted']:,} unaccounted")
    table.add_row("final status", ", ".join(f"{k} {v:,}" for k, v in
                                            summary["terminal"].items()))
    table.add_row("events", ", ".join(f"{k} {v:,}" for k, v in summary["events"].items()))
    codes = summary["failure_codes"]
    table.add_row("failure codes", ", ".join(f"{k} {v:,}" for k, v in codes.items()) or "-")
    table.add_row("throughput", f"{summary['throughput_per_s']:,} messages/s "
                                f"({summary['elapsed_s']} s)")
    for name, values in summary["latency_ms"].items():
        text = "  ".join(f"{k} {v:,.0f} ms" for k, v in values.items()) or "-"
        table.add_row(name.replace("_", " "), text)
    table.add_row("duplicates", f"{summary['duplicate_events']} duplicate events, "
                                f"{summary.get('duplicate_submissions', 0)} duplicate "
                                "submissions to ICS")
    console.print(table)
