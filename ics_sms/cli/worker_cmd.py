"""``ics-sms worker``: run a worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import click
from aiohttp import web

from ics_sms.broker.base import BrokerError
from ics_sms.cli.common import CliError, load_settings, read_senders
from ics_sms.cli.metrics_http import metrics_listener
from ics_sms.schemas.senders import SenderError
from ics_sms.schemas.settings import Settings
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
    settings = load_settings()
    worker = _build(settings)
    try:
        asyncio.run(run_until_signalled(worker, settings.metrics_port, settings.metrics_host))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {settings.metrics_host}:"
                       f"{settings.metrics_port}: {exc.strerror}") from None
