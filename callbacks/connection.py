"""The receiver's broker connection: opened at start-up, reopened on its own when it drops.

While the connection is down :attr:`BrokerLink.broker` is ``None`` (the receiver answers
503 so that ICS sends again later) and a background task reconnects with capped,
jittered backoff, declaring the topology again on every new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

from ics_sms.broker.base import Broker, BrokerError
from ics_sms.schemas.topology import Topology

__all__ = ["BrokerLink", "BrokerOpener", "reconnect_delay"]

log = structlog.get_logger(__name__)

BrokerOpener = Callable[[float], Awaitable[Broker]]
"""Opens a connected broker, retrying for at most the given seconds (then raises)."""


def reconnect_delay(attempt: int, *, base_s: float = 0.2, cap_s: float = 5.0,
                    jitter: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect ``attempt`` (0-based): doubling from ``base_s``, capped,
    with up to 50% random reduction so a fleet of receivers does not reconnect in step."""
    delay: float = min(cap_s, base_s * 2 ** min(attempt, 30))
    return delay * (1 - jitter() / 2)


class BrokerLink:
    """Owns one broker connection at a time and replaces it when it is lost."""

    def __init__(self, opener: BrokerOpener, topology: Topology, *,
                 base_delay_s: float = 0.2, max_delay_s: float = 5.0) -> None:
        self._opener = opener
        self._topology = topology
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._broker: Broker | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._reason = "not connected yet"
        self.reconnects = 0

    def __repr__(self) -> str:
        state = "ready" if self.ready else f"down ({self._reason})"
        return f"<BrokerLink {state} reconnects={self.reconnects}>"

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
        """Why the link is not ready (meaningful only when it is not)."""
        return self._reason

    async def start(self, retry_s: float) -> None:
        """Connect (retrying for ``retry_s``) and declare; raises BrokerError if impossible."""
        self._use(await self._connect(retry_s))
        self._watcher = asyncio.create_task(self._watch(), name="broker-link")

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

    async def _connect(self, retry_s: float) -> Broker:
        broker = await self._opener(retry_s)
        try:
            await broker.declare(self._topology)
        except BaseException:
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
            self._use(await self._reconnect())

    async def _reconnect(self) -> Broker:
        attempt = 0
        while True:
            try:
                broker = await self._connect(0)
            except BrokerError as exc:
                self._reason = str(exc)
                delay = reconnect_delay(attempt, base_s=self._base_delay_s,
                                        cap_s=self._max_delay_s)
                log.info("broker still unreachable", reason=self._reason, retry_in_s=delay)
                attempt += 1
                await asyncio.sleep(delay)
            else:
                self.reconnects += 1
                log.info("broker connection restored", attempts=attempt + 1)
                return broker
