"""Run the receiver until SIGTERM/SIGINT, failing fast with one line when it cannot start.

The port is bound first (a taken port fails at once, not after the broker retry budget),
then the broker is connected, then requests are served. On a signal the listener closes,
requests in flight finish (up to ``shutdown_timeout_s``) and the components stop.
The access log stays off: request paths hold the senders' tracking tokens.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

import structlog
from aiohttp import web

from ics_sms.broker.base import BrokerError
from ics_sms.callbacks.app import create_app
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import ContextStore
from ics_sms.stores.live import SendersView, as_view

__all__ = [
    "RunningReceiver",
    "StartupError",
    "bind_socket",
    "run_receiver",
    "start_receiver",
    "stop_on_signals",
]

log = structlog.get_logger(__name__)


KEEPALIVE_TIMEOUT_S = 10.0


class StartupError(Exception):
    """The receiver cannot start; the message is one line saying why."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking TCP socket; raises StartupError when the address is unusable."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT (a second one interrupts the shutdown).

    Outside the main thread (an embedding application, a test) signals cannot be handled:
    the event is then only set by whoever holds it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop

    def on_signal(signum: int) -> None:
        log.info("stopping on signal", signal=signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return stop


class RunningReceiver:
    """A receiver serving in this process; :meth:`stop` shuts it down gracefully."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"<RunningReceiver {self.host}:{self.port}>"

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish, then stop the components."""
        await self._runner.cleanup()
        log.info("receiver stopped")


async def start_receiver(settings: Settings, senders: Senders | SendersView, *, host: str,
                         port: int, context_store: ContextStore | None = None,
                         shutdown_timeout_s: float = 30.0) -> RunningReceiver:
    """Bind, connect to the broker, serve; raises StartupError when it cannot.

    ``context_store`` lets an embedding process (``memory://``) share its store with the
    worker; by default the settings name it. ``senders`` is read per request (see
    :func:`~ics_sms.callbacks.app.create_app`).
    """
    view = as_view(senders)
    app = create_app(settings, view, context_store=context_store)
    sock = bind_socket(host, port)
    # keepalive_timeout also bounds a request whose headers trickle in (slowloris)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException as exc:
        sock.close()
        await runner.cleanup()
        if isinstance(exc, BrokerError):
            raise StartupError(str(exc)) from None
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    log.info("receiver listening", host=bound_host, port=bound_port,
             senders=len(view.current), broker=settings.broker_url_redacted)
    return RunningReceiver(runner, bound_host, bound_port)


async def run_receiver(settings: Settings, senders: Senders | SendersView, *, host: str,
                       port: int) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    receiver = await start_receiver(settings, senders, host=host, port=port)
    try:
        await stop_on_signals().wait()
    finally:
        await receiver.stop()
