"""Each sender's ``rate_per_s`` for the whole fleet, and the pauses every worker honours.

``rate_per_s`` is the most records ICS gets from ICS-SMS for a sender per second, from all
workers together. A worker asks for the cost of a batch (its number of records) and is
told when it may send it: a *reservation* on the sender's schedule (GCRA, the generic cell
rate algorithm). The schedule is one number, the sender's *theoretical arrival time*
``tat``: a batch of ``n`` records may go at ``start = max(tat, now)`` and moves ``tat`` to
``start + n / rate``. Every batch is charged when it is granted, so a worker never asks
twice for the same batch, and the fleet's batches go out one after the other, in the order
they asked, each ``n / rate`` after the previous one: over any stretch of time ``T``, ICS
gets at most ``rate * T`` records plus one batch. There is no burst allowance beyond that
one batch (an idle sender's first batch goes at once). The precision of one second's
figure is one batch, so the worker keeps a batch's cost small against the rate.

The same call reads the sender's fleet-wide pauses (no extra round trip):

- *throttled* until an instant: ICS answered 429 with ``Retry-After``. Batches are granted
  from the end of the throttle on (their wait includes it), still one after the other.
- *refused* until an instant: ICS refused the sender's credentials (401/403). Nothing is
  granted; the worker holds the messages for the time left.

A batch already granted its moment before a pause was recorded goes at that moment (ICS
answers it 429 or 401 as well, and its messages wait like the others).

The same call also tells how many workers send for the sender now (each names itself; a
worker counts until its last granted batch goes and :data:`ACTIVE_S` after): the fleet
shares the sender's rate, so a worker holds only its share of what the sender can send
before the broker's consumer timeout (:mod:`ics_sms.workers.holding`).

Clock: the Redis implementation takes ``now`` from Redis ``TIME`` inside the script, so
every worker shares one clock and a worker's own clock does not matter. Two
implementations with the same semantics: :class:`RedisRateStore` (one Lua script call per
batch: atomic across the fleet) and :class:`InMemoryRateStore` (one process: ``memory://``
and unit tests, with a clock of its own).
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import MEMORY_URL
from ics_sms.stores.redis import RedisStore, StoreError

__all__ = [
    "Grant",
    "InMemoryRateStore",
    "RateStore",
    "RateStoreError",
    "RedisRateStore",
    "open_rate_store",
]

IDLE_TTL_S = 60
"""A sender's key lives this long past the end of its schedule and of its pauses."""

ACTIVE_S = 30.0
"""A worker counts as sending for a sender until its last granted batch goes, and this
long after (a worker of a slow sender asks once per batch, minutes apart)."""


class RateStoreError(StoreError):
    """The rate store could not be reached or refused the operation."""


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a request for ``cost`` records of a sender's rate."""

    wait_s: float = 0.0
    """Send the batch after this long: its cost is reserved for that moment."""
    throttled_s: float = 0.0
    """How much of ``wait_s`` is ICS's ``Retry-After`` (a 429), not the rate."""
    refused_s: float = 0.0
    """More than 0: ICS refused the sender's credentials; nothing was granted, the
    messages wait this long (the fleet-wide pause left)."""
    workers: int = 1
    """Workers sending for the sender now (this one included): they share its rate."""

    @property
    def granted(self) -> bool:
        return self.refused_s <= 0


class RateStore(abc.ABC):
    """Fleet-wide rate schedules and pauses, one per sender name."""

    @abc.abstractmethod
    async def acquire(self, sender: str, cost: int, rate_per_s: float, *,
                      worker: str = "") -> Grant:
        """Reserve ``cost`` records of ``sender``'s schedule at ``rate_per_s`` (unless the
        sender's credentials are refused) and say when they may go, and how many workers
        (``worker`` names the caller) send for it now. One round trip.
        Raises RateStoreError."""

    @abc.abstractmethod
    async def pause(self, sender: str, *, throttled_s: float = 0.0,
                    refused_s: float = 0.0) -> None:
        """Pause ``sender`` in every worker: throttled (a 429's ``Retry-After``) and/or
        refused (credentials) for that long from now; a longer pause already recorded
        stays. One round trip. Raises RateStoreError."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> RateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _check(cost: int, rate_per_s: float) -> None:
    if cost < 0:
        raise ValueError("cost must not be negative")
    if not rate_per_s > 0:
        raise ValueError("rate_per_s must be positive")


# -- in memory ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Schedule:
    tat: float = 0.0
    throttled: float = 0.0
    refused: float = 0.0


class InMemoryRateStore(RateStore):
    """The same schedules in one process, on ``clock`` (seconds; monotonic by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._schedules: dict[str, _Schedule] = {}
        self._active: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return f"<InMemoryRateStore senders={len(self._schedules)}>"

    async def acquire(self, sender: str, cost: int, rate_per_s: float, *,
                      worker: str = "") -> Grant:
        _check(cost, rate_per_s)
        now = self.clock()
        self._forget_idle(now)
        schedule = self._schedules.setdefault(sender, _Schedule())
        start = max(schedule.tat, now, schedule.throttled)
        active = self._active.setdefault(sender, {})
        if worker:  # sending for the sender until its batch goes, and ACTIVE_S after
            active[worker] = max(start, schedule.refused) + ACTIVE_S
        for name, till in list(active.items()):
            if till < now:
                del active[name]
        workers = max(len(active), 1)
        if schedule.refused > now:
            return Grant(refused_s=schedule.refused - now, workers=workers)
        schedule.tat = start + cost / rate_per_s
        return Grant(wait_s=start - now, throttled_s=max(schedule.throttled - now, 0.0),
                     workers=workers)

    async def pause(self, sender: str, *, throttled_s: float = 0.0,
                    refused_s: float = 0.0) -> None:
        now = self.clock()
        schedule = self._schedules.setdefault(sender, _Schedule())
        if throttled_s > 0:
            schedule.throttled = max(schedule.throttled, now + throttled_s)
        if refused_s > 0:
            schedule.refused = max(schedule.refused, now + refused_s)

    def _forget_idle(self, now: float) -> None:
        """Drop schedules nobody used for a while (removed senders, renamed ones)."""
        if len(self._schedules) < 64:
            return
        for name, s in list(self._schedules.items()):
            if max(s.tat, s.throttled, s.refused) + IDLE_TTL_S < now:
                del self._schedules[name]

    async def close(self) -> None:
        return None


# -- Redis --------------------------------------------------------------------------------

_NOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_KEEP_LUA = """
local last = math.max(tat, throttled, refused)
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(last - now, 0) + ARGV[#ARGV]) * 1000))
"""

_ACQUIRE_LUA = _NOW_LUA + f"""
local cost = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tat', 'throttled', 'refused')
local tat = tonumber(v[1]) or 0
local throttled = tonumber(v[2]) or 0
local refused = tonumber(v[3]) or 0
local start = math.max(tat, now, throttled)
-- the worker sends for the sender until its batch goes, and for ACTIVE_S after that
local busy = start
if refused > now then busy = refused end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3], string.format('%.3f', busy + {ACTIVE_S}))
end
local seen = redis.call('HGETALL', KEYS[2])
local workers, last = 0, now
for i = 1, #seen, 2 do
  local till = tonumber(seen[i + 1]) or 0
  if till < now then
    redis.call('HDEL', KEYS[2], seen[i])
  else
    workers = workers + 1
    last = math.max(last, till)
  end
end
redis.call('PEXPIRE', KEYS[2], math.ceil((last - now) * 1000) + 1000)
workers = tostring(math.max(workers, 1))
if refused > now then
  return {{'refused', string.format('%.6f', refused - now), workers}}
end
tat = start + cost / rate
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat))
""" + _KEEP_LUA + """
return {'granted', string.format('%.6f', start - now),
        string.format('%.6f', math.max(throttled - now, 0)), workers}
"""
"""KEYS: the sender's key, its workers' key (worker -> when it last asked). ARGV: cost,
rate_per_s, the worker's name, idle TTL. Returns ``granted, wait_s, throttled_s, workers``
or ``refused, refused_s, workers`` (numbers as strings: Lua numbers become integers)."""

_PAUSE_LUA = _NOW_LUA + """
local v = redis.call('HMGET', KEYS[1], 'tat', 'throttled', 'refused')
local tat = tonumber(v[1]) or 0
local throttled = tonumber(v[2]) or 0
local refused = tonumber(v[3]) or 0
local throttle_s = tonumber(ARGV[1])
local refuse_s = tonumber(ARGV[2])
if throttle_s > 0 and now + throttle_s > throttled then
  throttled = now + throttle_s
  redis.call('HSET', KEYS[1], 'throttled', string.format('%.6f', throttled))
end
if refuse_s > 0 and now + refuse_s > refused then
  refused = now + refuse_s
  redis.call('HSET', KEYS[1], 'refused', string.format('%.6f', refused))
end
""" + _KEEP_LUA + """
return 1
"""
"""KEYS: the sender's key. ARGV: throttled_s, refused_s, idle TTL."""


def _float(value: object) -> float:
    return float(value.decode() if isinstance(value, bytes) else str(value))


class RedisRateStore(RedisStore, RateStore):
    """One hash per sender (``tat``, ``throttled``, ``refused``: Redis ``TIME`` seconds);
    every call one script call on that one key."""

    error = RateStoreError

    def __init__(self, url: str, *, prefix: str = "ics-sms:rate:",
                 timeout_s: float = 1.0) -> None:
        RedisStore.__init__(self, url, prefix=prefix, ttl_s=IDLE_TTL_S, timeout_s=timeout_s)
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._pause = self._client.register_script(_PAUSE_LUA)

    async def acquire(self, sender: str, cost: int, rate_per_s: float, *,
                      worker: str = "") -> Grant:
        _check(cost, rate_per_s)
        key = self._prefix + sender
        with self.failing_as("reserve the sender's rate"):
            row: Sequence[object] = await self._acquire(
                keys=[key, key + "~workers"],
                args=[cost, repr(float(rate_per_s)), worker, self._ttl_s])
        if _text(row[0]) == "refused":
            return Grant(refused_s=_float(row[1]), workers=int(_float(row[2])))
        return Grant(wait_s=_float(row[1]), throttled_s=_float(row[2]),
                     workers=int(_float(row[3])))

    async def pause(self, sender: str, *, throttled_s: float = 0.0,
                    refused_s: float = 0.0) -> None:
        if not (math.isfinite(throttled_s) and math.isfinite(refused_s)):
            raise ValueError("pauses must be finite")
        if throttled_s <= 0 and refused_s <= 0:
            return
        with self.failing_as("record the sender's pause"):
            await self._pause(keys=[self._prefix + sender],
                              args=[repr(float(throttled_s)), repr(float(refused_s)),
                                    self._ttl_s])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_rate_store(settings: Settings) -> RateStore:
    """The store the settings name: Redis at ``redis_url``, in-process for ``memory://``."""
    if settings.redis_url.startswith(MEMORY_URL):
        return InMemoryRateStore()
    return RedisRateStore(settings.redis_url, prefix=f"ics-sms:{settings.namespace}rate:")
