"""Per-message context: what a worker knows when it submits a message, for the receiver.

A receipt from ICS names only our smsgid (hence the message id), a status and a time. To
publish *complete* receipt events the receiver needs what the send request said, so the
worker writes one :class:`MessageContext` per message when it submits it (``put_many``,
best before the ICS request so that even the fastest receipt finds it), and the receiver
reads the contexts of a whole receipt batch in one round trip (``get_many``).

Two implementations: :class:`RedisContextStore` (production; values are compact JSON
with a TTL, 15 days by default) and :class:`InMemoryContextStore` (one process: the
embedded ``memory://`` mode and unit tests).

What a receipt-only event can lack
    When the store has no entry for a message (never written, expired after the TTL,
    written by a worker that could not reach Redis) or the store is unreachable, the
    receiver still publishes the event with what the receipt and the tracking URL tell:
    ``event_id``, ``message_id``, ``status``, ``occurred_at``, ``sender`` (from the
    tracking URL), ``error_code``/``error`` and ``url``. It then lacks ``campaign_id``
    (null), ``metadata`` (``{}``), ``segments`` and ``encoding`` (absent), and the receiver
    logs a warning with the number of such receipts. A delivery receipt is never held back
    or refused for want of context: losing it is worse than an incomplete event.

What a receipt is checked against
    ``sender`` and ``urls`` bind receipts to their message (see
    :func:`ics_sms.callbacks.receipts.bind`): a ``clicked`` receipt's URL must be one of
    ``urls``, the links in the text the producer sent (for ICS-shortened links ICS reports
    the original URL). ``urls`` is ``None`` when unknown (a context written before it was
    recorded); ``()`` means the text had no link. A legacy smsgid (signed before sender
    binding) is accepted only when ``sender`` matches the tracking URL's sender.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from ics_sms.schemas.messages import Encoding, Identifier, SendRequest
from ics_sms.schemas.settings import Settings
from ics_sms.stores.redis import RedisStore, StoreError
from ics_sms.workers.links import find_urls

__all__ = [
    "DEFAULT_CONTEXT_TTL_S",
    "ContextStore",
    "ContextStoreError",
    "InMemoryContextStore",
    "MessageContext",
    "RedisContextStore",
    "decode_many",
    "link_key",
    "open_context_store",
]

log = structlog.get_logger(__name__)

DEFAULT_CONTEXT_TTL_S = 15 * 24 * 3600
"""How long a context is kept: longer than ICS keeps trying to deliver and report."""

MEMORY_URL = "memory://"


class ContextStoreError(StoreError):
    """The context store could not be reached or refused the operation."""


class MessageContext(BaseModel):
    """What the receiver cannot learn from a receipt, keyed by ``message_id``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    message_id: Identifier
    campaign_id: str
    sender: str | None = Field(default=None, description="Name of the resolved sender.")
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    segments: int | None = Field(default=None, ge=1)
    encoding: Encoding | None = None
    urls: tuple[str, ...] | None = Field(
        default=None, description="The links in the text as sent by the producer; None: "
                                  "not recorded.")

    @classmethod
    def for_request(
        cls,
        request: SendRequest,
        *,
        sender: str,
        segments: int | None = None,
        encoding: Encoding | None = None,
    ) -> MessageContext:
        """The context of a send request as the worker submits it (hot path: the request
        is already valid, so nothing is validated again)."""
        text = request.text
        urls = tuple(u for _s, _e, u in find_urls(text)) if "://" in text else ()
        return cls.model_construct(message_id=request.message_id,
                                   campaign_id=request.campaign_id, sender=sender,
                                   metadata=request.metadata, segments=segments,
                                   encoding=encoding, urls=urls)

    def has_link(self, url: str) -> bool | None:
        """Whether ``url`` is one of this message's links; None when they are unknown."""
        if self.urls is None:
            return None
        key = link_key(url)
        return any(link_key(known) == key for known in self.urls)

    def to_value(self) -> bytes:
        """Compact JSON of the fields that are set (the defaults are left out)."""
        value: dict[str, Any] = {"message_id": self.message_id,
                                 "campaign_id": self.campaign_id}
        if self.sender is not None:
            value["sender"] = self.sender
        if self.metadata:
            value["metadata"] = self.metadata
        if self.segments is not None:
            value["segments"] = self.segments
        if self.encoding is not None:
            value["encoding"] = self.encoding
        if self.urls is not None:
            value["urls"] = self.urls
        return orjson.dumps(value)

    @classmethod
    def from_value(cls, message_id: str, value: bytes | str) -> MessageContext:
        """Inverse of :meth:`to_value`; raises ``ValueError`` on a corrupt or foreign value."""
        context = cls.model_validate_json(value)
        if context.message_id != message_id:
            raise ValueError(f"the value holds the context of {context.message_id!r}")
        return context


_TRAILING = ".,;:!?)]}'\"\u00bb\u201d\u2019\u2026"


def link_key(url: str) -> str:
    """What two spellings of one link share: without surrounding space and trailing
    sentence punctuation, scheme and host in lower case, an empty path as ``/``."""
    url = url.strip().rstrip(_TRAILING)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                       parts.query, parts.fragment))


class ContextStore(abc.ABC):
    """Where workers leave message contexts and the receiver finds them."""

    @abc.abstractmethod
    async def put_many(self, contexts: Sequence[MessageContext]) -> None:
        """Store (or replace) every context in one round trip; raises ContextStoreError."""

    @abc.abstractmethod
    async def get_many(self, message_ids: Iterable[str]) -> dict[str, MessageContext]:
        """The known contexts of ``message_ids`` in one round trip; unknown ids are absent.

        Raises :class:`ContextStoreError` when the store cannot answer.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> ContextStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class InMemoryContextStore(ContextStore):
    """Contexts in a dict of one process, bounded in size and age."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_CONTEXT_TTL_S,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, MessageContext]] = {}

    def __repr__(self) -> str:
        return f"<InMemoryContextStore entries={len(self._entries)} ttl_s={self._ttl_s:g}>"

    async def put_many(self, contexts: Sequence[MessageContext]) -> None:
        expires = self._clock() + self._ttl_s
        for context in contexts:
            self._entries.pop(context.message_id, None)  # re-insert: newest last
            self._entries[context.message_id] = (expires, context)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    async def get_many(self, message_ids: Iterable[str]) -> dict[str, MessageContext]:
        now = self._clock()
        found = {}
        for message_id in message_ids:
            entry = self._entries.get(message_id)
            if entry is None:
                continue
            if entry[0] <= now:
                del self._entries[message_id]
            else:
                found[message_id] = entry[1]
        return found

    async def close(self) -> None:
        """Nothing to release: the contexts stay for whoever shares this store."""


_PUT_LUA = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""
"""Every SET of a batch in one command: far cheaper for the client than a pipeline.
(Single Redis; on Redis Cluster the keys of a batch would need one hash slot.)"""


class RedisContextStore(RedisStore, ContextStore):
    """Contexts in Redis: every ``SET key value EX ttl`` of a batch in one script call,
    read back with one ``MGET``."""

    error = ContextStoreError

    def __init__(self, url: str, *, prefix: str = "ics-sms:ctx:",
                 ttl_s: int = DEFAULT_CONTEXT_TTL_S, timeout_s: float = 1.0) -> None:
        super().__init__(url, prefix=prefix, ttl_s=ttl_s, timeout_s=timeout_s)
        self._put_script = self._client.register_script(_PUT_LUA)

    def key(self, message_id: str) -> str:
        return self._prefix + message_id

    async def put_many(self, contexts: Sequence[MessageContext]) -> None:
        if not contexts:
            return
        keys = [self.key(context.message_id) for context in contexts]
        values = [context.to_value() for context in contexts]
        with self.failing_as("store message contexts"):
            await self._put_script(keys=keys, args=[self._ttl_s, *values])

    async def get_many(self, message_ids: Iterable[str]) -> dict[str, MessageContext]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        with self.failing_as("read message contexts"):
            values = await self._client.mget([self.key(i) for i in ids])
        present = [(i, v if isinstance(v, bytes) else str(v).encode())
                   for i, v in zip(ids, values, strict=True) if v is not None]
        return decode_many(present)


_contexts: TypeAdapter[list[MessageContext]] = TypeAdapter(list[MessageContext])


def decode_many(present: Sequence[tuple[str, bytes]]) -> dict[str, MessageContext]:
    """Stored contexts (``(message_id, value)``) decoded: all validated in one pass (much
    cheaper than one by one); when any is corrupt or foreign, one by one, skipping those."""
    decoded = _decode_all(present)
    return decoded if decoded is not None else _decode_each(present)


def _decode_all(present: Sequence[tuple[str, bytes]]) -> dict[str, MessageContext] | None:
    """Every value validated in one pass; None when any is off (then decode one by one)."""
    if not present:
        return {}
    try:
        contexts = _contexts.validate_json(b"[" + b",".join(v for _, v in present) + b"]")
    except ValidationError:
        return None
    if len(contexts) != len(present) or any(
            c.message_id != i for c, (i, _v) in zip(contexts, present, strict=False)):
        return None
    return {c.message_id: c for c in contexts}


def _decode_each(present: Sequence[tuple[str, bytes]]) -> dict[str, MessageContext]:
    found = {}
    for message_id, value in present:
        try:
            found[message_id] = MessageContext.from_value(message_id, value)
        except ValueError:  # orjson and pydantic errors are ValueErrors
            log.warning("unreadable message context ignored", message_id=message_id)
    return found


def open_context_store(settings: Settings, *, ttl_s: int = DEFAULT_CONTEXT_TTL_S) -> ContextStore:
    """The store the settings name: Redis at ``redis_url``, in-process for ``memory://``."""
    if settings.redis_url.startswith(MEMORY_URL):
        return InMemoryContextStore(ttl_s=ttl_s)
    return RedisContextStore(
        settings.redis_url, prefix=f"ics-sms:{settings.namespace}ctx:", ttl_s=ttl_s
    )
