"""Per-sender batching without a broker: full batches, linger, lane slots, stop and drop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import pytest

from ics_sms.schemas.senders import Lane, Sender
from ics_sms.workers.batching import Batcher
from tests.workers.conftest import PROMO, SERVICE

OTHER = SERVICE.model_copy(update={"name": "otp2"})
HOUR_S = 3600.0


@dataclass
class Item:
    sender: Sender
    n: int


class Sent:
    """Records each batch handed to ``send``; holds them while ``gate`` is clear."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.changed = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, sender: Sender, items: list[Item]) -> None:
        self.batches.append((sender.name, [item.n for item in items]))
        self.changed.set()
        await self.gate.wait()

    def spawn(self, coro: Awaitable[None]) -> None:
        self.tasks.add(asyncio.ensure_future(coro))

    async def until(self, count: int) -> list[tuple[str, list[int]]]:
        async with asyncio.timeout(10):
            while len(self.batches) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.batches

    async def finish(self) -> None:
        self.gate.set()
        await asyncio.gather(*self.tasks)


def batcher(sent: Sent, *, batch_max: int = 3, linger_s: float = HOUR_S,
            service_slots: int = 2) -> Batcher[Item]:
    return Batcher(sent.send, sent.spawn, batch_max=batch_max, linger_s=linger_s,
                   slots={Lane.SERVICE: service_slots, Lane.PROMOTIONAL: 1})


async def test_a_full_batch_goes_at_once() -> None:
    sent = Sent()
    b = batcher(sent)
    for n in range(3):
        b.add(Item(SERVICE, n))
    assert await sent.until(1) == [("otp", [0, 1, 2])]
    b.add(Item(SERVICE, 3))  # lingers: the next batch is not full
    assert repr(b) == "<Batcher pending=1 senders=1 waiting_for_slot=0>"
    await sent.finish()


async def test_a_partial_batch_goes_when_it_has_lingered() -> None:
    sent = Sent()
    b = batcher(sent, linger_s=0.001)
    b.add(Item(SERVICE, 1))
    b.add(Item(PROMO, 2))
    assert sorted(await sent.until(2)) == [("otp", [1]), ("promo", [2])]
    assert b.pending == 0
    await sent.finish()


async def test_senders_are_batched_apart() -> None:
    sent = Sent()
    b = batcher(sent, batch_max=2)
    for item in [Item(SERVICE, 1), Item(OTHER, 2), Item(OTHER, 3), Item(SERVICE, 4)]:
        b.add(item)
    assert await sent.until(2) == [("otp2", [2, 3]), ("otp", [1, 4])]
    await sent.finish()


async def test_a_busy_lane_sends_full_batches_when_a_slot_frees() -> None:
    sent = Sent()
    sent.gate.clear()
    b = batcher(sent, batch_max=3, service_slots=1)
    b.add(Item(SERVICE, 0))
    b.flush("otp")
    await sent.until(1)  # holds the lane's only slot
    for n in range(1, 8):
        b.add(Item(SERVICE, n))  # two batches fill up, one more job waits
    assert "waiting_for_slot=1" in repr(b)
    sent.gate.set()
    assert await sent.until(4) == [("otp", [0]), ("otp", [1, 2, 3]), ("otp", [4, 5, 6]),
                                   ("otp", [7])]
    await sent.finish()


async def test_lanes_have_their_own_slots() -> None:
    sent = Sent()
    sent.gate.clear()
    b = batcher(sent, batch_max=1, service_slots=1)
    b.add(Item(PROMO, 1))
    b.add(Item(SERVICE, 2))
    assert sorted(await sent.until(2)) == [("otp", [2]), ("promo", [1])]
    await sent.finish()


async def test_flush_all_sends_everything_gathered() -> None:
    sent = Sent()
    b = batcher(sent)
    b.add(Item(SERVICE, 1))
    b.add(Item(PROMO, 2))
    b.flush_all()
    await sent.finish()
    assert sorted(sent.batches) == [("otp", [1]), ("promo", [2])]


async def test_clear_drops_batches_and_their_timers() -> None:
    sent = Sent()
    b = batcher(sent, linger_s=0.001)
    b.add(Item(SERVICE, 1))
    b.clear()
    assert repr(b) == "<Batcher pending=0 senders=0 waiting_for_slot=0>"
    b.add(Item(SERVICE, 2))  # a fresh batch lingers and goes on its own
    assert await sent.until(1) == [("otp", [2])]
    await sent.finish()


def test_a_batch_holds_at_least_one_job() -> None:
    with pytest.raises(ValueError, match="batch_max"):
        Batcher(Sent().send, Sent().spawn, batch_max=0, linger_s=1, slots={})


async def test_held_counts_what_a_sender_has_gathered_or_in_send() -> None:
    sent = Sent()
    sent.gate.clear()
    b = batcher(sent, batch_max=2)
    for n in range(3):
        b.add(Item(SERVICE, n))
    b.add(Item(OTHER, 9))
    assert (b.held(SERVICE.name), b.held(OTHER.name), b.held("nobody")) == (3, 1, 0)
    await sent.until(1)  # [0, 1] is in send, [2] still gathered
    assert b.held(SERVICE.name) == 3
    b.flush_all()
    await sent.finish()
    assert (b.held(SERVICE.name), b.held(OTHER.name)) == (0, 0)


async def test_held_is_released_when_send_fails_and_dropped_by_clear() -> None:
    async def failing(_sender: Sender, _items: list[Item]) -> None:
        raise RuntimeError("boom")

    tasks: list[asyncio.Future[None]] = []
    b: Batcher[Item] = Batcher(failing, lambda c: tasks.append(asyncio.ensure_future(c)),
                               batch_max=1, linger_s=HOUR_S, slots={Lane.SERVICE: 1})
    b.add(Item(SERVICE, 1))
    with pytest.raises(RuntimeError):
        await asyncio.gather(*tasks)
    assert b.held(SERVICE.name) == 0
    sent = Sent()
    kept = batcher(sent)
    kept.add(Item(SERVICE, 1))
    kept.clear()
    assert kept.held(SERVICE.name) == 0


def eager_batcher(sent: Sent, *, service_slots: int = 2) -> Batcher[Item]:
    return Batcher(sent.send, sent.spawn, batch_max=10, linger_s=HOUR_S,
                   slots={Lane.SERVICE: service_slots, Lane.PROMOTIONAL: 1},
                   eager=(Lane.SERVICE,))


async def test_an_idle_eager_lane_sends_at_once_without_lingering() -> None:
    sent = Sent()
    b = eager_batcher(sent)
    b.add(Item(SERVICE, 1))  # the linger is an hour: only eagerness sends it
    assert await sent.until(1) == [("otp", [1])]
    await sent.finish()


async def test_a_busy_eager_lane_gathers_and_sends_one_batch_when_idle_again() -> None:
    sent = Sent()
    sent.gate.clear()
    b = eager_batcher(sent, service_slots=4)
    b.add(Item(SERVICE, 1))
    await sent.until(1)  # out, holding one of four slots
    for n in range(2, 5):
        b.add(Item(SERVICE, n))  # free slots, yet the lane is busy: they gather
    b.add(Item(OTHER, 9))
    await asyncio.sleep(0)
    assert b.pending == 4
    assert "waiting_for_slot=0" in repr(b)
    sent.gate.set()  # the batch returns, the lane is idle: what gathered goes, no linger
    assert sorted(await sent.until(3)) == [("otp", [1]), ("otp", [2, 3, 4]), ("otp2", [9])]
    await sent.finish()


async def test_lanes_not_eager_still_linger() -> None:
    sent = Sent()
    b = eager_batcher(sent)
    b.add(Item(PROMO, 1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (sent.batches, b.pending) == ([], 1)
    b.flush_all()
    await sent.finish()
    assert sent.batches == [("promo", [1])]
