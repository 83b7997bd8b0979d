"""Where the senders live: the TOML file, or the shared PostgreSQL registry of a fleet.

Every process (workers, receiver, CLI, console) goes through a :class:`SenderSource`:
it loads a whole :class:`Snapshot` (validated as a whole: a broken configuration is never
half applied), saves a whole new configuration (optimistically: against the version it
was read at), and can wait for a change. :func:`open_sender_source` picks the
implementation from the settings.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

from ics_sms.schemas.senders import SenderError, Senders
from ics_sms.schemas.settings import Settings

__all__ = [
    "AuditEntry",
    "MemorySenderSource",
    "SenderConflict",
    "SenderSource",
    "SenderSourceError",
    "Snapshot",
    "open_sender_source",
]


class SenderSourceError(SenderError):
    """The source cannot be read or written (unreachable, unreadable, invalid content)."""


class SenderConflict(SenderSourceError):
    """Someone else changed the senders since they were read: read again and redo."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One whole, valid configuration and the version it had in its source."""

    senders: Senders
    version: str
    """Opaque; changes whenever the configuration may have changed."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of the configuration (never holds a token)."""

    at: datetime
    actor: str
    action: str
    sender: str | None
    detail: str


class SenderSource(abc.ABC):
    """The senders of this deployment, as one configuration with a version."""

    description: str
    """Where the senders live, for logs and messages (never a password or a token)."""

    @abc.abstractmethod
    def load(self) -> Snapshot:
        """The current configuration. Raises :class:`SenderSourceError` (with the reason)
        when it cannot be read or is not valid as a whole."""

    @abc.abstractmethod
    def save(self, senders: Senders, *, expected: str | None, actor: str,
             action: str) -> Snapshot:
        """Replace the configuration with ``senders``, provided it is still at version
        ``expected`` (None: whatever it is). ``actor`` and ``action`` go to the audit
        trail. Raises :class:`SenderConflict` or :class:`SenderSourceError`."""

    @abc.abstractmethod
    async def wait_for_change(self, version: str, timeout_s: float) -> None:
        """Return when the configuration may have moved past ``version``, or after
        ``timeout_s`` (callers then :meth:`load` and compare versions)."""

    def history(self, limit: int = 100) -> list[AuditEntry]:
        """The most recent changes, newest first (empty where the source keeps none)."""
        return []

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release connections."""


class MemorySenderSource(SenderSource):
    """Senders held by this process only (tests, the embedded demo, fixed configurations);
    saves are seen by whoever waits on the same object."""

    def __init__(self, senders: Senders | None = None) -> None:
        self.description = "senders in memory"
        self._snapshot = Snapshot(senders or Senders(), "1")
        self._saved = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MemorySenderSource senders={len(self._snapshot.senders)}>"

    def load(self) -> Snapshot:
        return self._snapshot

    def save(self, senders: Senders, *, expected: str | None, actor: str,
             action: str) -> Snapshot:
        if expected is not None and expected != self._snapshot.version:
            raise SenderConflict("the senders changed since they were read")
        self._snapshot = Snapshot(senders, str(int(self._snapshot.version) + 1))
        saved, self._saved = self._saved, asyncio.Event()
        saved.set()
        return self._snapshot

    async def wait_for_change(self, version: str, timeout_s: float) -> None:
        if self._snapshot.version != version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._saved.wait(), timeout_s)


def open_sender_source(settings: Settings) -> SenderSource:
    """The registry when ``ICS_SMS_SENDERS_URL`` is set, else the senders file."""
    if settings.senders_url is not None:
        from ics_sms.stores.registry import PostgresSenderSource

        return PostgresSenderSource.from_settings(settings)
    from ics_sms.stores.senders_file import FileSenderSource

    return FileSenderSource(settings.senders_file)
