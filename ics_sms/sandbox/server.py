"""Running the sandbox inside the current process (tests, demo, benchmarks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ics_sms.sandbox.app import STATE, create_app
from ics_sms.sandbox.config import SandboxConfig

__all__ = ["RunningSandbox", "running_sandbox", "start_sandbox"]


class RunningSandbox:
    """A sandbox serving on ``url`` until :meth:`close`; also an async context manager."""

    def __init__(self, runner: web.AppRunner, app: web.Application, url: str) -> None:
        self._runner = runner
        self.app = app
        self.url = url
        self._closed = False

    def __repr__(self) -> str:
        return f"<RunningSandbox url={self.url} {self.app[STATE].stats!r}>"

    @property
    def datasend_url(self) -> str:
        return f"{self.url}/datasend"

    def stats(self, *, by_smsgid: bool = False) -> dict[str, Any]:
        """The same counters as ``GET /_stats``, without the HTTP round trip."""
        return self.app[STATE].stats_json(by_smsgid=by_smsgid)

    async def wait_receipts_posted(self) -> None:
        """Return once no receipt is pending (wrap in ``asyncio.timeout``)."""
        await self.app[STATE].dispatcher.wait_idle()

    async def wait_until(self, condition: Callable[[dict[str, Any]], bool]) -> None:
        """Return once ``condition(stats)`` holds; re-checked after every receipt POST.

        For conditions on receipt counters (posted, retried, failed...); wrap in
        ``asyncio.timeout``.
        """
        await self.app[STATE].dispatcher.wait_settled(lambda: condition(self.stats()))

    async def close(self) -> None:
        """Stop serving, cancel and await the receipt tasks, close the client session."""
        if not self._closed:
            self._closed = True
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def start_sandbox(
    config: SandboxConfig, host: str = "127.0.0.1", port: int = 0
) -> RunningSandbox:
    """Serve a sandbox on ``host:port`` (0: a free port) and return it running.

    Raises OSError when the address cannot be bound (e.g. the port is taken).
    """
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return RunningSandbox(runner, app, f"http://{shown_host}:{bound_port}")


@asynccontextmanager
async def running_sandbox(
    config: SandboxConfig, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSandbox]:
    """``async with running_sandbox(config) as sandbox:`` serves for the block's duration."""
    sandbox = await start_sandbox(config, host, port)
    try:
        yield sandbox
    finally:
        await sandbox.close()
