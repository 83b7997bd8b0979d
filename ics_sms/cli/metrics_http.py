"""The metrics listener of a service: ``/metrics`` on its own address, never the ICS-facing one.

It binds ``ICS_SMS_METRICS_HOST`` (loopback by default: a pod or container that is scraped
from outside sets ``0.0.0.0``) and a port of its own, so whoever can reach the receiver's
public port (ICS, the Internet) never reads the process's metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Handler", "metrics_listener"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@contextlib.asynccontextmanager
async def metrics_listener(host: str, port: int,
                           extra: dict[str, Handler] | None = None) -> AsyncIterator[None]:
    """Serve ``/metrics`` (and ``extra`` GET routes) on ``host:port``; nothing when port is 0.

    Raises ``OSError`` when the address cannot be bound.
    """
    if not port:
        yield
        return
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    for path, handler in (extra or {}).items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
