"""``ics-sms worker``: run a worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

import click

from broker.base import BrokerError
from ics_sms.cli.common import CliError, load_settings, read_senders
from schemas.senders import SenderError
from schemas.settings import Settings
from workers.service import Worker

__all__ = ["run_until_signalled", "worker_command"]


async def run_until_signalled(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _build(settings: Settings) -> Worker:
    senders = read_senders(settings)
    if not len(senders):
        raise CliError(f"no senders configured in {settings.senders_file}: "
                       "add one with `ics-sms senders add`")
    try:
        return Worker(settings, senders)
    except (SenderError, ValueError) as exc:
        raise CliError(str(exc)) from None


@click.command("worker")
def worker_command() -> None:
    """Consume send requests and submit them to ICS (stops cleanly on SIGTERM)."""
    worker = _build(load_settings())
    try:
        asyncio.run(run_until_signalled(worker))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
