"""Fault injection shared by the test suites: a TCP proxy that can be cut and restored.

:class:`TcpProxy` runs on the caller's event loop (the receiver tests use it that way);
:class:`ProxyThread` runs one on a loop of its own in a background thread, for synchronous
tests that drive real processes (the chaos suite), so the proxy keeps relaying while the
test thread blocks in a producer call or polls a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ProxyThread", "TcpProxy", "url_at"]

T = TypeVar("T")


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)


class ProxyThread:
    """A :class:`TcpProxy` serving from a background thread; every method blocks until done."""

    def __init__(self, target_host: str, target_port: int, *, timeout_s: float = 30.0) -> None:
        self.proxy = TcpProxy(target_host, target_port)
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._running = False
        self.cut_now = False

    def __repr__(self) -> str:
        state = "cut" if self.cut_now else "relaying"
        return f"<ProxyThread 127.0.0.1:{self.proxy.port} -> {self.proxy._target} {state}>"

    @property
    def port(self) -> int:
        return self.proxy.port

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout_s)

    def start(self) -> ProxyThread:
        self._thread.start()
        self._running = True
        self._call(self.proxy.start())
        return self

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self._call(self.proxy.cut())
        self.cut_now = True

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self.proxy.restore())
        self.cut_now = False

    def close(self) -> None:
        if not self._running:
            return
        self._running = False
        if not self.cut_now:
            with contextlib.suppress(Exception):  # best effort at teardown: the loop goes
                self._call(self.proxy.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout_s)
        self._loop.close()


def url_at(url: str, port: int, *, password: str | None = None) -> str:
    """``url`` (amqp://user:pass@host:port/vhost) pointing at 127.0.0.1:``port``, e.g. a
    proxy in front of the broker (optionally with another password)."""
    parts = urlsplit(url)
    if parts.username is None:
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    secret = parts.password if password is None else password
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{secret}@127.0.0.1:{port}"))
