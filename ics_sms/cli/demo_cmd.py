"""``ics-sms demo``: the main job in one command."""

from __future__ import annotations

import asyncio
import json

import click

from ics_sms.broker.base import BrokerError
from ics_sms.cli.common import CliError
from ics_sms.demo.display import choose_display, print_summary
from ics_sms.demo.run import DemoOptions, run_demo
from ics_sms.logs import configure_logging

__all__ = ["demo_command"]


@click.command("demo")
@click.option("--messages", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="How many messages the sample campaign has.")
@click.option("--broker", "broker_url", metavar="URL",
              help="Run on this RabbitMQ (amqp://...) instead of the embedded broker.")
@click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Worker processes (in-process workers on the embedded broker).")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True,
              help="Seconds to wait for every message to reach a final status.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--console", "console_port", type=click.IntRange(1, 65535), is_flag=False,
              flag_value=8090, default=None, metavar="[PORT]",
              help="Also serve the operator console (default port 8090) on the demo's data, "
                   "with a generated login, until Ctrl-C.")
def demo_command(messages: int, broker_url: str | None, workers: int, timeout_s: float,
                 as_json: bool, console_port: int | None) -> None:
    """Run sandbox, receiver, workers and a campaign; account for every message.

    Exits non-zero when any message ends without a final status.
    """
    options = DemoOptions(messages=messages, broker_url=broker_url, workers=workers,
                          timeout_s=timeout_s, console_port=console_port)
    configure_logging("warning")  # the demo's own output is the progress and the summary
    display = choose_display(quiet=as_json)
    try:
        summary = asyncio.run(run_demo(options, display))
    except (BrokerError, OSError) as exc:
        raise CliError(f"demo could not run: {exc}") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if summary["unaccounted"]:
        raise CliError(f"{summary['unaccounted']} messages have no final status")
