"""Short links of self-tracked senders, shared by workers (write) and receivers (read).

A :class:`ShortLink` maps a code (see ``workers/links.py``) to the original URL and the
message it was sent in, for ``link_ttl_s`` (15 days by default). Each resolution counts
the click, so the receiver can tell a first click from a repeated one. Redis in
production (``SET ... EX`` pipelined; ``GET`` + ``INCR`` in one round trip), a dict in one
process for the embedded broker.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, JsonValue

from ics_sms.schemas.settings import Settings
from ics_sms.stores.redis import RedisStore, StoreError

__all__ = [
    "DEFAULT_LINK_TTL_S",
    "InMemoryLinkStore",
    "LinkStore",
    "LinkStoreError",
    "RedisLinkStore",
    "ShortLink",
    "open_link_store",
]

DEFAULT_LINK_TTL_S = 15 * 24 * 3600


class LinkStoreError(StoreError):
    """The link store could not be reached."""


class ShortLink(BaseModel):
    """Where a short code leads, and which message it belongs to."""

    model_config = ConfigDict(frozen=True)

    code: str
    url: str
    message_id: str
    campaign_id: str
    sender: str
    metadata: dict[str, JsonValue] = {}


class LinkStore(abc.ABC):
    @abc.abstractmethod
    async def put_many(self, links: Sequence[ShortLink]) -> None:
        """Store every link in one round trip; raises :class:`LinkStoreError`."""

    @abc.abstractmethod
    async def click(self, code: str) -> tuple[ShortLink, int] | None:
        """The link of ``code`` and how often it has now been clicked; None if unknown."""

    async def close(self) -> None:
        """Release connections (nothing to release by default)."""
        return

    async def __aenter__(self) -> LinkStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class InMemoryLinkStore(LinkStore):
    def __init__(self, *, ttl_s: float = DEFAULT_LINK_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._links: dict[str, tuple[float, ShortLink]] = {}
        self._clicks: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<InMemoryLinkStore links={len(self._links)}>"

    async def put_many(self, links: Sequence[ShortLink]) -> None:
        expires = self._clock() + self._ttl_s
        for link in links:
            self._links[link.code] = (expires, link)

    async def click(self, code: str) -> tuple[ShortLink, int] | None:
        entry = self._links.get(code)
        if entry is None or entry[0] <= self._clock():
            self._links.pop(code, None)
            return None
        self._clicks[code] = self._clicks.get(code, 0) + 1
        return entry[1], self._clicks[code]


_CLICK_LUA = """
local link = redis.call('GET', KEYS[1])
if not link then return nil end
local count = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {link, count}
"""
"""Resolve and count a click in one round trip (only existing links are counted)."""


class RedisLinkStore(RedisStore, LinkStore):
    """Links as ``SET ... EX`` (pipelined); a click is resolved and counted by one script."""

    error = LinkStoreError

    def __init__(self, url: str, *, prefix: str = "ics-sms:", ttl_s: int = DEFAULT_LINK_TTL_S,
                 timeout_s: float = 1.0) -> None:
        super().__init__(url, prefix=prefix, ttl_s=ttl_s, timeout_s=timeout_s)
        self._click_script = self._client.register_script(_CLICK_LUA)

    async def put_many(self, links: Sequence[ShortLink]) -> None:
        if not links:
            return
        with self.failing_as("store short links"):
            async with self._client.pipeline(transaction=False) as pipe:
                for link in links:
                    value = orjson.dumps(link.model_dump(mode="json"))
                    pipe.set(f"{self._prefix}link:{link.code}", value, ex=self._ttl_s)
                await pipe.execute()

    async def click(self, code: str) -> tuple[ShortLink, int] | None:
        keys = [f"{self._prefix}link:{code}", f"{self._prefix}clicks:{code}"]
        with self.failing_as("read short links"):
            found = await self._click_script(keys=keys, args=[self._ttl_s])
        if found is None:
            return None
        value, count = found
        return ShortLink.model_validate_json(value), int(count)


def open_link_store(settings: Settings) -> LinkStore:
    """Redis at ``redis_url``, or in process for ``memory://``."""
    if settings.redis_url.startswith("memory:"):
        return InMemoryLinkStore(ttl_s=settings.link_ttl_s)
    return RedisLinkStore(settings.redis_url, prefix=f"ics-sms:{settings.namespace}",
                          ttl_s=settings.link_ttl_s)
