"""What every Redis store of ics-sms shares: one client per store, a key prefix, a TTL,
and Redis failures turned into the store's own error with a reason."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["RedisStore", "StoreError", "delete_prefix"]


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key that starts with ``prefix`` (a namespace's records, links, rates:
    ``ics-sms:{namespace}``) and say how many; nothing for a ``memory://`` store. Raises
    redis' errors (the caller decides whether a leftover matters)."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return 0
    client: Redis = Redis.from_url(url, socket_timeout=10)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += await client.unlink(*batch)
                batch = []
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


class StoreError(Exception):
    """A store could not be reached or refused the operation."""


class RedisStore:
    """Base of the Redis stores: ``timeout_s`` bounds every command."""

    error: type[StoreError] = StoreError
    """Raised (with what failed and why) when Redis cannot answer."""

    def __init__(self, url: str, *, prefix: str, ttl_s: int, timeout_s: float = 1.0) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least 1 second")
        self._client: Redis = Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s)
        self._prefix = prefix
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self._prefix!r} ttl_s={self._ttl_s}>"

    @contextlib.contextmanager
    def failing_as(self, what: str) -> Iterator[None]:
        """Turn a Redis or socket failure into :attr:`error`: ``cannot {what}: {reason}``."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self.error(f"cannot {what}: {exc}") from None

    async def close(self) -> None:
        """Release the connections of this store's pool."""
        await self._client.aclose()
