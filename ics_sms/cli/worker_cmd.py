"""``ics-sms worker``: run a worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import get_args

import click
from aiohttp import web

from ics_sms.broker.base import BrokerError
from ics_sms.cli.common import CliError, load_settings
from ics_sms.cli.metrics_http import metrics_listener
from ics_sms.schemas.senders import SenderError
from ics_sms.schemas.settings import Settings, WorkerLanes
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.senders import SenderSource, open_sender_source
from ics_sms.workers.service import Worker

__all__ = ["run_until_signalled", "worker_command"]


@contextlib.asynccontextmanager
async def metrics_server(port: int, worker: Worker,
                         host: str = "127.0.0.1") -> AsyncIterator[None]:
    """``/metrics`` (Prometheus) and ``/healthz`` on ``host:port``; nothing when port is 0."""

    async def healthz(_request: web.Request) -> web.Response:
        ready = worker.ready.is_set()
        return web.json_response({"status": "consuming" if ready else "connecting"},
                                 status=200 if ready else 503)

    async with metrics_listener(host, port, {"/healthz": healthz}):
        yield


async def run_until_signalled(worker: Worker, metrics_port: int = 0,
                              metrics_host: str = "127.0.0.1") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with metrics_server(metrics_port, worker, metrics_host):
            await worker.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _build(settings: Settings, source: SenderSource) -> Worker:
    """The worker on the senders of ``source``, followed live. A source that cannot be read
    at start stops the command; a sender whose token cannot be read only holds its own
    messages, and no senders at all is said loudly (they may be added while it runs)."""
    try:
        return Worker(settings, LiveSenders.open(source, settings))
    except (SenderError, ValueError) as exc:
        raise CliError(str(exc)) from None


@click.command("worker")
@click.option("--lanes", type=click.Choice(get_args(WorkerLanes)),
              help="The send queues to consume: service (a worker no promotional backlog "
                   "can slow), promotional, or all  [default: ICS_SMS_WORKER_LANES, else all]")
def worker_command(lanes: WorkerLanes | None) -> None:
    """Consume send requests and submit them to ICS (stops cleanly on SIGTERM).

    Senders added, changed or removed while it runs are used within
    ICS_SMS_SENDERS_RELOAD_S, without a restart. A message in the wrong lane is still moved
    to its sender's lane, for the workers of that lane."""
    settings = load_settings(worker_lanes=lanes)
    try:
        source = open_sender_source(settings)
    except SenderError as exc:
        raise CliError(str(exc)) from None
    try:
        worker = _build(settings, source)
        asyncio.run(run_until_signalled(worker, settings.metrics_port, settings.metrics_host))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {settings.metrics_host}:"
                       f"{settings.metrics_port}: {exc.strerror}") from None
    finally:
        source.close()
