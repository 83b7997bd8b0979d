"""Per-sender batching: gather jobs, send a batch when it is full or has lingered long enough,
with a limited number of batches in flight per lane.

A batch that is due first waits for a slot of its sender's lane, then takes everything
gathered meanwhile (up to ``batch_max``): a busy lane sends full batches instead of
queueing small ones.

An *eager* lane (the service lane: latency first) does not linger while it is idle: with
no batch of the lane due or being sent, a batch is due with its first job; what arrives
while one is out goes as one batch when the lane is idle again (or has lingered). It
batches only under load, when batching pays: idle, a message waits for nothing; busy, the
batches grow with the load. (Due at once while a *slot* is free would not do: one sender's
steady stream then goes out in tiny batches, an ICS request and a confirm window per few
messages: the broker's CPU per message quadrupled in ``ics-sms bench --stage worker``.)

The :class:`Batcher` knows nothing of brokers or ICS: it calls ``send(sender, jobs)`` while
holding the slot, and hands its tasks to ``spawn`` so that the owner (the worker's session)
can wait for them or cancel them. It counts what each sender holds (gathered or being
sent), which the session bounds (:mod:`.holding`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Generic, Protocol, TypeVar

from ics_sms.schemas.senders import Lane, Sender

__all__ = ["Batchable", "Batcher"]


class Batchable(Protocol):
    """What a batcher needs to know of a job: whose it is."""

    @property
    def sender(self) -> Sender: ...


J = TypeVar("J", bound=Batchable)


class Batcher(Generic[J]):
    """Batches per sender name; ``slots`` bounds the batches in flight of each lane."""

    __slots__ = ("_batch_max", "_busy", "_due", "_eager", "_held", "_linger_s", "_pending",
                 "_send", "_slots", "_spawn", "_timers")

    def __init__(self, send: Callable[[Sender, list[J]], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None], *, batch_max: int, linger_s: float,
                 slots: Mapping[Lane, int], eager: Collection[Lane] = ()) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._send = send
        self._spawn = spawn
        self._batch_max = batch_max
        self._linger_s = linger_s
        self._slots = {lane: asyncio.Semaphore(count) for lane, count in slots.items()}
        self._eager = frozenset(eager)
        self._busy = dict.fromkeys(slots, 0)  # lane -> batches due or in ``send``
        self._pending: dict[str, list[J]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._due: set[str] = set()  # senders whose batch waits for a slot
        self._held: dict[str, int] = {}  # sender -> jobs gathered or in ``send``

    def __repr__(self) -> str:
        return (f"<Batcher pending={self.pending} senders={len(self._pending)} "
                f"waiting_for_slot={len(self._due)}>")

    @property
    def pending(self) -> int:
        """Jobs gathered and not yet handed to ``send``."""
        return sum(len(jobs) for jobs in self._pending.values())

    def held(self, name: str) -> int:
        """Jobs of sender ``name`` gathered or being sent (not yet returned by ``send``)."""
        return self._held.get(name, 0)

    def add(self, job: J) -> None:
        """Gather ``job``; its batch is due when full, or ``linger_s`` after its first job
        (in an eager lane: at once while the lane is idle)."""
        name = job.sender.name
        self._held[name] = self._held.get(name, 0) + 1
        batch = self._pending.setdefault(name, [])
        batch.append(job)
        if len(batch) >= self._batch_max:
            self.flush(name)
        elif len(batch) == 1:
            lane = job.sender.lane
            if lane in self._eager and not self._busy[lane]:
                self.flush(name)
            else:
                self._timers[name] = asyncio.get_running_loop().call_later(
                    self._linger_s, self.flush, name)

    def flush(self, name: str) -> None:
        """The sender's batch is due: send it as soon as a slot of its lane is free."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if name in self._pending and name not in self._due:
            self._due.add(name)
            sender = self._pending[name][0].sender
            self._busy[sender.lane] += 1
            self._spawn(self._send_when_free(sender))

    def flush_all(self) -> None:
        """Every batch is due now (a graceful stop)."""
        for name in list(self._pending):
            self.flush(name)

    def clear(self) -> None:
        """Drop everything gathered (the connection is gone: the broker requeued it).
        Batches already due stay counted in their lane until their tasks end."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()
        self._due.clear()
        self._held.clear()

    async def _send_when_free(self, sender: Sender) -> None:
        """Take the slot first, then everything gathered meanwhile (up to ``batch_max``).
        An eager lane left idle sends at once what gathered while it was busy."""
        lane = sender.lane
        try:
            await self._send_in_slot(sender)
        finally:
            self._busy[lane] -= 1
            if lane in self._eager and not self._busy[lane]:
                for name, jobs in list(self._pending.items()):
                    if jobs[0].sender.lane is lane:
                        self.flush(name)

    async def _send_in_slot(self, sender: Sender) -> None:
        async with self._slots[sender.lane]:
            name = sender.name
            self._due.discard(name)
            timer = self._timers.pop(name, None)
            if timer is not None:
                timer.cancel()
            jobs = self._pending.pop(name, [])
            limit = self._batch_max
            if len(jobs) > limit:
                self._pending[name] = jobs[limit:]
                jobs = jobs[:limit]
                self.flush(name)
            if jobs:
                try:
                    await self._send(sender, jobs)
                finally:
                    self._release(name, len(jobs))

    def _release(self, name: str, count: int) -> None:
        left = self._held.get(name, 0) - count
        if left > 0:
            self._held[name] = left
        else:  # also after clear(): what was dropped is no longer held
            self._held.pop(name, None)
