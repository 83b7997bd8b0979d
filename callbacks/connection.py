"""The receiver's broker connection: opened at start-up, reopened on its own when it drops.

While the connection is down :attr:`BrokerConnection.broker` is ``None`` (the receiver
answers 503 so that ICS sends again later) and a background task reconnects through
:func:`~ics_sms.broker.connect.connect_with_backoff`, declaring the topology again on every
new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from ics_sms.broker.base import Broker, BrokerError
from ics_sms.broker.connect import RECONNECT_BASE_S, RECONNECT_CAP_S, connect_with_backoff
from ics_sms.schemas.topology import Topology

__all__ = ["BrokerConnection", "BrokerOpener"]

log = structlog.get_logger(__name__)

BrokerOpener = Callable[[], Awaitable[Broker]]
"""One attempt to open a connected broker; raises :class:`BrokerError` when it cannot."""


class BrokerConnection:
    """Owns one broker connection at a time and replaces it when it is lost."""

    def __init__(self, opener: BrokerOpener, topology: Topology, *, broker: str = "broker",
                 base_delay_s: float = RECONNECT_BASE_S,
                 max_delay_s: float = RECONNECT_CAP_S) -> None:
        self._opener = opener
        self._topology = topology
        self._label = broker
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._broker: Broker | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._reason = "not connected yet"
        self.reconnects = 0

    def __repr__(self) -> str:
        state = "ready" if self.ready else f"down ({self._reason})"
        return f"<BrokerConnection {state} reconnects={self.reconnects}>"

    @property
    def broker(self) -> Broker | None:
        """The connected broker, or None while reconnecting."""
        broker = self._broker
        return broker if broker is not None and broker.is_open else None

    @property
    def ready(self) -> bool:
        return self.broker is not None

    async def wait_ready(self) -> None:
        """Return once a connection is up (at once when it is)."""
        await self._connected.wait()

    @property
    def reason(self) -> str:
        """Why the connection is not ready (meaningful only when it is not)."""
        return self._reason

    async def start(self, retry_s: float) -> None:
        """Connect (retrying for ``retry_s``) and declare; raises BrokerError if impossible."""
        self._use(await connect_with_backoff(
            self._connect, broker=self._label, retry_s=retry_s, base_s=self._base_delay_s,
            cap_s=self._max_delay_s))
        self._watcher = asyncio.create_task(self._watch(), name="broker-connection")

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        broker = self._broker
        self._use(None)
        self._reason = "closed"
        if broker is not None:
            try:
                await broker.close()
            except BrokerError as exc:  # it was already lost: nothing left to close
                log.debug("broker already closed", reason=str(exc))

    def _use(self, broker: Broker | None) -> None:
        self._broker = broker
        if broker is None:
            self._connected.clear()
        else:
            self._connected.set()

    async def _connect(self) -> Broker:
        """One attempt: open and declare; a failure becomes the :attr:`reason`."""
        try:
            broker = await self._opener()
        except BrokerError as exc:
            self._reason = str(exc)
            raise
        try:
            await broker.declare(self._topology)
        except BaseException as exc:
            if isinstance(exc, BrokerError):
                self._reason = str(exc)
            with contextlib.suppress(BrokerError):
                await broker.close()
            raise
        return broker

    async def _watch(self) -> None:
        while True:
            broker = self._broker
            assert broker is not None
            try:
                await asyncio.shield(broker.closed)
                self._reason = "connection closed"
            except BrokerError as exc:
                self._reason = str(exc)
            self._use(None)
            log.warning("broker connection lost, reconnecting", reason=self._reason)
            # Every broker error is worth another try here: the receiver stays up (503s)
            # until the broker is back, whatever kept it away.
            self._use(await connect_with_backoff(
                self._connect, broker=self._label, retry_on=(BrokerError,),
                base_s=self._base_delay_s, cap_s=self._max_delay_s))
            self.reconnects += 1
            log.info("broker connection restored", reconnects=self.reconnects)
