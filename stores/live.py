"""Senders that change while a service runs: the last good configuration, kept current.

A :class:`LiveSenders` holds one whole :class:`~ics_sms.stores.senders.Snapshot` of a
:class:`~ics_sms.stores.senders.SenderSource` and :meth:`LiveSenders.run` keeps it current:
it waits for the source to change (at most ``Settings.senders_reload_s``), loads it in a
thread and, when the version moved, swaps the configuration and calls the listeners.
Callers read :attr:`LiveSenders.current` on every use (per message, per request): it is
one immutable :class:`~ics_sms.schemas.senders.Senders`, never half of an edit.

Decisions
    *Start.* :meth:`LiveSenders.open` loads once and raises
    :class:`~ics_sms.stores.senders.SenderSourceError` when the source cannot be read or is
    invalid: the command exits with that one-line reason and its supervisor (systemd,
    Kubernetes) restarts it with back-off. A service is not started on a guess: with no
    configuration a receiver would refuse every receipt and a worker every message, and
    nothing at start tells a registry that is down for a second from one that is misnamed
    for good. A missing senders file is an empty configuration, not an error: the service
    starts and warns that it has no senders, at start and every
    :data:`NO_SENDERS_LOG_S` while it has none.

    *While running.* A load that fails (an invalid edit, an unreadable file, the registry
    down) keeps the last good configuration: ``ics_sms_senders_config_ok`` drops to 0,
    ``ics_sms_senders_reload_failures_total`` counts the attempts, and one error is
    logged per distinct failure (not per poll); the first good load after it logs once
    that the source is usable again.

    *Removed senders.* A receipt can arrive days after its message was sent. The source's
    own record of removed senders (:attr:`Senders.retired`) is completed with the senders
    this process saw disappear (a sender gone from the file, or whose tracking token was
    replaced), dated when the change was seen: :attr:`current` lists both, and their
    tracking URLs keep working for ``Settings.senders_grace_s``. What the source does not
    record is forgotten at restart.

    *Tokens.* :meth:`LiveSenders.token` resolves a sender's ICS token (``token_env``,
    ``token_file``) and caches it per (sender, token source) for ``senders_reload_s``, so
    a token file rotated in place or mounted late is picked up without a restart. A token
    that cannot be resolved marks that sender unusable (:meth:`LiveSenders.unusable`,
    ``ics_sms_sender_token_ok{sender}`` at 0, one warning per episode); the process and
    the other senders go on.

    *Secrets.* The tracking tokens and ICS tokens of every configuration taken into use are
    added to :data:`~ics_sms.schemas.redact.SECRETS`, so they are redacted from every log
    line, as the command line does for the configuration it reads at start.

Listeners (:meth:`LiveSenders.subscribe`) are plain callables ``(old, new)`` run in the
event loop right after a swap; one that raises is logged and the others still run.
Every change is logged with the names of the senders added, removed and changed (and the
fields that changed, never their values) and the default's switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge
from pydantic import SecretStr

from ics_sms.schemas.redact import SECRETS, known_secrets
from ics_sms.schemas.senders import RetiredSender, Sender, SenderError, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.senders import (
    MemorySenderSource,
    SenderSource,
    SenderSourceError,
    Snapshot,
)

__all__ = [
    "CONFIGURED",
    "CONFIG_OK",
    "NO_SENDERS_LOG_S",
    "RELOADS",
    "RELOAD_FAILURES",
    "TOKEN_OK",
    "Listener",
    "LiveSenders",
    "SendersView",
    "StaticSenders",
    "as_view",
    "describe_change",
]

log = structlog.get_logger(__name__)

CONFIG_OK = Gauge("ics_sms_senders_config_ok",
                  "1: the senders source was read at the last attempt; 0: it cannot be read or "
                  "is invalid, the last good configuration stays in use.")
RELOADS = Counter("ics_sms_senders_reloads",
                  "New senders configurations taken into use while running.")
RELOAD_FAILURES = Counter("ics_sms_senders_reload_failures",
                          "Loads of the senders source that failed (the last good "
                          "configuration stayed in use).")
CONFIGURED = Gauge("ics_sms_senders_configured", "Senders in the configuration in use.")
TOKEN_OK = Gauge("ics_sms_sender_token_ok",
                 "1: the sender's ICS token can be read; 0: it cannot (missing variable or "
                 "file), the sender cannot send.", ["sender"])

NO_SENDERS_LOG_S = 300.0
"""While no sender is configured, a warning at most this often."""

Listener = Callable[[Senders, Senders], None]
"""Called with ``(old, new)`` after each change, in the event loop; must not block."""


class SendersView(Protocol):
    """Something that gives the senders in use now (read it on every use)."""

    @property
    def current(self) -> Senders: ...


@dataclass(frozen=True, slots=True)
class StaticSenders:
    """A configuration that never changes (tests, one-shot commands, the demo)."""

    current: Senders


def as_view(senders: Senders | SendersView) -> SendersView:
    """``senders`` as a :class:`SendersView` (fixed senders are wrapped)."""
    return StaticSenders(senders) if isinstance(senders, Senders) else senders


@dataclass(slots=True)
class _Token:
    """One resolution of a sender's token: the token or why there is none, and when."""

    token: SecretStr | None
    reason: str | None
    at: float


class LiveSenders:
    """The current senders of a :class:`SenderSource`, reloaded while :meth:`run` runs."""

    def __init__(self, source: SenderSource, snapshot: Snapshot, *, reload_s: float,
                 grace_s: float, check_tokens: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """``check_tokens``: resolve every sender's token at each change (workers send
        with them; the receiver never needs them and passes False)."""
        self.source = source
        self.reload_s = reload_s
        self.grace_s = grace_s
        self._check_tokens = check_tokens
        self._clock = clock
        self._now = now
        self._snapshot = snapshot
        self._seen_retired: tuple[RetiredSender, ...] = ()
        self._current = snapshot.senders
        self._listeners: list[Listener] = []
        self._failure: str | None = None
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._unusable: dict[str, str] = {}
        self._last_empty_warning = -float("inf")
        CONFIG_OK.set(1)
        self._taken_into_use(snapshot.senders)

    @classmethod
    def open(cls, source: SenderSource, settings: Settings, *,
             check_tokens: bool = True) -> LiveSenders:
        """Load ``source`` once (blocking); raises :class:`SenderSourceError` if it cannot
        be used. The settings' secrets join the redacted ones, as the senders' do."""
        snapshot = source.load()
        SECRETS.add(*known_secrets(settings))
        return cls(source, snapshot, reload_s=settings.senders_reload_s,
                   grace_s=settings.senders_grace_s, check_tokens=check_tokens)

    @classmethod
    def fixed(cls, senders: Senders, settings: Settings, *,
              check_tokens: bool = True) -> LiveSenders:
        """``senders`` held in memory (tests, the embedded demo): they change only by
        saving to :attr:`source`."""
        return cls(MemorySenderSource(senders), Snapshot(senders, "1"),
                   reload_s=settings.senders_reload_s, grace_s=settings.senders_grace_s,
                   check_tokens=check_tokens)

    def __repr__(self) -> str:
        return (f"<LiveSenders {self.source!r} senders={len(self._current)} "
                f"version={self.version}>")

    @property
    def current(self) -> Senders:
        """The senders in use now, removed ones within their grace period included in
        ``retired``. Read it on every use; never keep it."""
        return self._current

    @property
    def version(self) -> str:
        """The source's version of :attr:`current`."""
        return self._snapshot.version

    @property
    def healthy(self) -> bool:
        """False while the source cannot be read (the last good configuration is used)."""
        return self._failure is None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(old, new)`` after each change; returns the unsubscribe call."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # -- running -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Keep :attr:`current` up to date until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self._wait(stopping)
                if stop.is_set():
                    break
                await self.reload()
                self._warn_if_empty()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def _wait(self, stopping: asyncio.Future[Any]) -> None:
        """Until the source may have changed, ``reload_s`` passed, or stop."""
        waiting = asyncio.ensure_future(
            self.source.wait_for_change(self.version, self.reload_s))
        either: set[asyncio.Future[Any]] = {waiting, stopping}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        if waiting.cancelled() or waiting.exception() is None:
            return
        # A source that cannot even wait (a lost notification channel): poll instead.
        log.warning("cannot wait for senders changes, polling", source=self.source.description,
                    error=type(waiting.exception()).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopping), self.reload_s)

    async def reload(self) -> bool:
        """Load the source now; True when a new configuration was taken into use."""
        try:
            snapshot, secrets = await asyncio.to_thread(self._load)
        except SenderSourceError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # a bug or an unforeseen error of a source: keep running
            if self._failure is None:
                log.exception("unexpected error loading the senders",
                              source=self.source.description)
            self._failed(f"unexpected {type(exc).__name__}")
            return False
        self._recovered()
        if snapshot.version == self._snapshot.version:
            return False
        SECRETS.add(*secrets)
        return self.swap(snapshot)

    def _load(self) -> tuple[Snapshot, list[str]]:
        """In a thread: the snapshot and its secrets (resolving tokens reads files)."""
        snapshot = self.source.load()
        return snapshot, known_secrets(None, snapshot.senders)

    def swap(self, snapshot: Snapshot) -> bool:
        """Take ``snapshot`` into use (when :meth:`reload` loaded it, or after a save by
        this process); True when the configuration differs from the current one."""
        old = self._current
        now = self._now()
        seen = self._retire(self._snapshot.senders, snapshot.senders, now)
        new = snapshot.senders
        if seen:
            new = new.model_copy(update={"retired": (*new.retired, *seen)})
        self._snapshot, self._seen_retired = snapshot, seen
        if (new.default, new.senders, new.retired) == (old.default, old.senders, old.retired):
            log.debug("senders source changed, configuration the same", version=self.version)
            return False
        self._current = new
        RELOADS.inc()
        log.info("senders changed", version=self.version, **describe_change(old, new))
        self._taken_into_use(new, old)
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:  # one broken listener must not starve the others
                log.exception("senders change listener failed", listener=repr(listener))
        return True

    def _retire(self, old: Senders, new: Senders, now: datetime) -> tuple[RetiredSender, ...]:
        """The removals this process saw, still in their grace period and not recorded by
        the source: the old ones kept, those of this change added."""
        live = {s.tracking_token for s in new}
        recorded = {r.tracking_token for r in new.retired}
        fresh = tuple(RetiredSender(name=s.name, tracking_token=s.tracking_token, removed_at=now)
                      for s in old if s.tracking_token not in live | recorded)
        kept = (*self._seen_retired, *fresh)
        return tuple(r for r in kept
                     if r.tracking_token not in live | recorded
                     and (now - r.removed_at).total_seconds() <= self.grace_s)

    def _taken_into_use(self, new: Senders, old: Senders | None = None) -> None:
        CONFIGURED.set(len(new))
        SECRETS.add(*(s.tracking_token for s in new))
        for name in set(old.senders if old else ()) - set(new.senders):
            self._forget(name)
        if not len(new):
            self._warn_if_empty(force=True)
        if self._check_tokens:
            for sender in new:
                self.token(sender)

    def _failed(self, reason: str) -> None:
        RELOAD_FAILURES.inc()
        CONFIG_OK.set(0)
        if reason != self._failure:
            log.error("senders configuration cannot be used, keeping the last good one",
                      source=self.source.description, reason=reason, version=self.version)
        self._failure = reason

    def _recovered(self) -> None:
        CONFIG_OK.set(1)
        if self._failure is not None:
            log.info("senders configuration usable again", source=self.source.description)
            self._failure = None

    def _warn_if_empty(self, *, force: bool = False) -> None:
        if len(self._current):
            return
        now = self._clock()
        if force or now - self._last_empty_warning >= NO_SENDERS_LOG_S:
            self._last_empty_warning = now
            log.warning("no senders configured", source=self.source.description)

    # -- tokens ------------------------------------------------------------------------

    def token(self, sender: Sender) -> SecretStr | None:
        """The sender's ICS token, or None when it cannot be resolved now (see
        :meth:`unusable` for why). Cheap: resolved at most once per ``reload_s``."""
        if sender.token is not None:
            self._usable(sender.name)
            return sender.token
        key = (sender.name, sender.token_source.value,
               str(sender.token_env if sender.token_env is not None else sender.token_file))
        now = self._clock()
        entry = self._tokens.get(key)
        if entry is None or now - entry.at >= self.reload_s:
            entry = self._tokens[key] = self._resolve(sender, entry, now)
        return entry.token

    def unusable(self, name: str) -> str | None:
        """Why the current sender ``name`` cannot send (its token cannot be resolved), or
        None (also for a sender that is not configured: that is the caller's business)."""
        sender = self._current.senders.get(name)
        if sender is None or self.token(sender) is not None:
            return None
        return self._unusable.get(name)

    def _resolve(self, sender: Sender, previous: _Token | None, now: float) -> _Token:
        try:
            token = sender.resolve_token()
        except SenderError as exc:
            reason = str(exc)
            if self._unusable.get(sender.name) != reason:
                log.warning("sender cannot send: its ICS token cannot be read",
                            sender=sender.name, reason=reason)
            self._unusable[sender.name] = reason
            TOKEN_OK.labels(sender.name).set(0)
            return _Token(None, reason, now)
        if previous is None or previous.token != token:
            SECRETS.add(token.get_secret_value())
        self._usable(sender.name)
        return _Token(token, None, now)

    def _usable(self, name: str) -> None:
        if self._unusable.pop(name, None) is not None:
            log.info("sender can send again: its ICS token can be read", sender=name)
        TOKEN_OK.labels(name).set(1)

    def _forget(self, name: str) -> None:
        self._unusable.pop(name, None)
        for key in [k for k in self._tokens if k[0] == name]:
            del self._tokens[key]
        with contextlib.suppress(KeyError):
            TOKEN_OK.remove(name)


def describe_change(old: Senders, new: Senders) -> dict[str, object]:
    """What changed from ``old`` to ``new``, for a log line: names and field names, never a
    value (tokens are secrets)."""
    change: dict[str, object] = {}
    added = sorted(set(new.senders) - set(old.senders))
    removed = sorted(set(old.senders) - set(new.senders))
    changed = {name: _fields(old.senders[name], new.senders[name])
               for name in sorted(set(old.senders) & set(new.senders))
               if old.senders[name] != new.senders[name]}
    if added:
        change["added"] = added
    if removed:
        change["removed"] = removed
    if changed:
        change["changed"] = changed
    if old.default != new.default:
        change["default"] = f"{old.default} -> {new.default}"
    retiring = sorted({r.name for r in new.retired} - {r.name for r in old.retired})
    if retiring:
        change["receipts_still_accepted_for"] = retiring
    return change


def _fields(old: Sender, new: Sender) -> list[str]:
    names: Iterable[str] = type(old).model_fields
    return [name for name in names if getattr(old, name) != getattr(new, name)]
