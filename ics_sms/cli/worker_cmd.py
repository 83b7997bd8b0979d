"""``ics-sms worker``: run a worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import click
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ics_sms.broker.base import BrokerError
from ics_sms.cli.common import CliError, load_settings, read_senders
from ics_sms.schemas.senders import SenderError
from ics_sms.schemas.settings import Settings
from ics_sms.workers.service import Worker

__all__ = ["run_until_signalled", "worker_command"]


@contextlib.asynccontextmanager
async def metrics_server(port: int, worker: Worker) -> AsyncIterator[None]:
    """``/metrics`` (Prometheus) and ``/healthz`` on ``port``; nothing when it is 0."""
    if not port:
        yield
        return

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        ready = worker.ready.is_set()
        return web.json_response({"status": "consuming" if ready else "connecting"},
                                 status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", port).start()
        yield
    finally:
        await runner.cleanup()


async def run_until_signalled(worker: Worker, metrics_port: int = 0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with metrics_server(metrics_port, worker):
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
        asyncio.run(run_until_signalled(worker, settings.metrics_port))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on port {settings.metrics_port}: "
                       f"{exc.strerror}") from None
