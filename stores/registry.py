"""The shared senders registry of a fleet: PostgreSQL as a :class:`SenderSource`.

Tables (created on first use, ``CREATE TABLE IF NOT EXISTS`` under an advisory lock, in the
schema the connection's ``search_path`` names first, usually ``public``):

``ics_sms_senders_config``
    one row per namespace: the config ``version`` (bigint, +1 on every save), the default
    sender and the retired senders (JSON).
``ics_sms_senders``
    one row per sender: its fields as JSON (never an inline token), the inline ICS token
    encrypted (``token_encrypted``) and the id of the key that encrypted it (``key_id``).
``ics_sms_senders_audit``
    one row per change: when, who (actor), what command (action), which sender, what
    changed (field names; a token is only ever "token changed").

Every table is keyed by ``Settings.namespace``: deployments (and parallel tests) sharing a
database keep apart configurations in the same three tables, so a role needs no right to
create schemas. A save ``NOTIFY``s the channel :data:`CHANNEL` with the namespace and the
new version (delivered on commit); :meth:`PostgresSenderSource.wait_for_change` listens.

Inline tokens are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the first key of
``ICS_SMS_SENDERS_KEY``; the other keys still decrypt. The plaintext binds the namespace and
the sender name, so a token copied onto another row does not decrypt as that sender's.
Key rotation: put the new key first (``new,old``) everywhere, run :meth:`rotate_keys` once,
then drop the old key. ``token_env`` and ``token_file`` are stored as they are: they say
where each machine finds the token, not the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
import psycopg.errors
import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from psycopg.types.json import Jsonb
from pydantic import SecretStr, ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.senders import RetiredSender, Sender, Senders
from ics_sms.schemas.settings import Settings, redact_url
from ics_sms.stores.senders import (
    AuditEntry,
    SenderConflict,
    SenderSource,
    SenderSourceError,
    Snapshot,
)

__all__ = ["CHANNEL", "PostgresSenderSource", "SenderKeys"]

CHANNEL = "ics_sms_senders"
"""The NOTIFY channel; the payload is ``{"namespace": ..., "version": ...}`` (JSON)."""

CONFIG_TABLE = "ics_sms_senders_config"
SENDERS_TABLE = "ics_sms_senders"
AUDIT_TABLE = "ics_sms_senders_audit"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {CONFIG_TABLE} (
    namespace text PRIMARY KEY,
    version bigint NOT NULL,
    default_sender text,
    retired jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SENDERS_TABLE} (
    namespace text NOT NULL,
    name text NOT NULL,
    fields jsonb NOT NULL,
    token_encrypted bytea,
    key_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (
    id bigserial PRIMARY KEY,
    namespace text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    sender text,
    detail text NOT NULL
);
CREATE INDEX IF NOT EXISTS ics_sms_senders_audit_namespace ON {AUDIT_TABLE} (namespace, id);
"""
_SCHEMA_LOCK = 0x1C5_5E4D  # pg_advisory_xact_lock key: one creator of the tables at a time

_CONNECT_TIMEOUT_S = 10
_KEY_ENV = "ICS_SMS_SENDERS_KEY"
_URL_ENV = "ICS_SMS_SENDERS_URL"
_SCHEMES = frozenset({"postgresql", "postgres"})

_T = TypeVar("_T")

log = structlog.get_logger(__name__)


def _redacted(url: str) -> str:
    """The URL without its password, also when given as a ``password=`` query parameter."""
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", redact_url(url))


class SenderKeys:
    """The Fernet keys of ``ICS_SMS_SENDERS_KEY``: encrypt with the first, decrypt with any.

    The plaintext is JSON naming the namespace and the sender, so a ciphertext only
    decrypts as the token of the sender it was written for."""

    def __init__(self, secret: SecretStr) -> None:
        raw = [k.strip() for k in secret.get_secret_value().split(",") if k.strip()]
        if not raw:
            raise SenderSourceError(f"{_KEY_ENV}: empty; give one or more keys, newest first")
        fernets = []
        for number, key in enumerate(raw, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except ValueError:
                raise SenderSourceError(
                    f"{_KEY_ENV}: key {number} of {len(raw)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes; make one with: python -c 'from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())')") from None
        self._fernet = MultiFernet(fernets)
        self.key_ids = tuple(self.key_id(key) for key in raw)
        """Short fingerprints of the keys, newest first (stored beside each ciphertext)."""

    def __repr__(self) -> str:
        return f"<SenderKeys {', '.join(self.key_ids)}>"

    @staticmethod
    def key_id(key: str) -> str:
        return hashlib.sha256(b"ics-sms senders key id\0" + key.encode()).hexdigest()[:12]

    @property
    def newest(self) -> str:
        return self.key_ids[0]

    def encrypt(self, namespace: str, sender: str, token: SecretStr) -> bytes:
        plain = json.dumps({"namespace": namespace, "sender": sender,
                            "token": token.get_secret_value()})
        return self._fernet.encrypt(plain.encode())

    def decrypt(self, namespace: str, sender: str, ciphertext: bytes,
                key_id: str | None) -> SecretStr:
        try:
            plain = json.loads(self._fernet.decrypt(ciphertext))
        except (InvalidToken, ValueError):
            raise SenderSourceError(
                f"sender {sender!r}: its token cannot be decrypted with {_KEY_ENV} (it was "
                f"encrypted with key {key_id or 'unknown'}; configured: "
                f"{', '.join(self.key_ids)})") from None
        if (not isinstance(plain, dict) or plain.get("namespace") != namespace
                or plain.get("sender") != sender or not isinstance(plain.get("token"), str)):
            raise SenderSourceError(
                f"sender {sender!r}: its stored token belongs to another sender; set it again")
        return SecretStr(plain["token"])


def _token_origin(sender: Sender) -> str:
    """Where the token comes from, for the audit trail (never the token)."""
    if sender.token_env is not None:
        return f"token from ${sender.token_env}"
    if sender.token_file is not None:
        return f"token from file {sender.token_file}"
    return "inline token (encrypted)"


def _fields(sender: Sender) -> dict[str, Any]:
    """What the senders table keeps as JSON: everything but the name and an inline token."""
    return sender.model_dump(mode="json", exclude={"name", "token"}, exclude_none=True)


def _changes(old: Sender, new: Sender) -> list[str]:
    """What changed, by field name; values only for ``disabled`` (a reason, not a secret)."""
    before, after = _fields(old), _fields(new)
    notes = []
    if (old.token_env, old.token_file) != (new.token_env, new.token_file) or (
            old.token is None) != (new.token is None):
        notes.append(f"token source now: {_token_origin(new)}")
    elif old.token is not None and new.token is not None and (
            old.token.get_secret_value() != new.token.get_secret_value()):
        notes.append("token changed")
    if old.disabled != new.disabled:
        notes.append("enabled again" if new.disabled is None else f"disabled: {new.disabled}")
    skip = {"token_env", "token_file", "disabled"}
    names = sorted(k for k in before.keys() | after.keys()
                   if k not in skip and before.get(k) != after.get(k))
    if names:
        notes.insert(0, "changed " + ", ".join(names))
    return notes


def _audit_rows(old: Senders, new: Senders) -> list[tuple[str | None, str]]:
    """(sender, detail) for every difference between two configurations."""
    rows: list[tuple[str | None, str]] = []
    kept = {r.tracking_token for r in new.retired}
    for name in sorted(old.senders.keys() | new.senders.keys()):
        before, after = old.senders.get(name), new.senders.get(name)
        if before is None:
            assert after is not None
            detail = f"added ({after.type.value}, {after.sender_id}, {_token_origin(after)})"
            if after.disabled is not None:
                detail += f"; disabled: {after.disabled}"
            rows.append((name, detail))
        elif after is None:
            rows.append((name, "removed (its tracking URL still accepts receipts for the grace "
                               "period)" if before.tracking_token in kept else "removed"))
        elif notes := _changes(before, after):
            rows.append((name, "; ".join(notes)))
    if old.default != new.default:
        rows.append((new.default, f"default sender: {old.default or '(none)'} -> "
                                  f"{new.default or '(none)'}"))
    for gone in old.retired:
        if gone.tracking_token not in kept:
            rows.append((gone.name, "retired sender forgotten (its tracking URL no longer "
                                    "accepts receipts)"))
    return rows


class PostgresSenderSource(SenderSource):
    """The senders of ``namespace`` in the PostgreSQL database at ``url``.

    :meth:`load`, :meth:`save`, :meth:`history` and :meth:`rotate_keys` use one synchronous
    connection (opened on first use, again after a failure; safe from several threads);
    :meth:`wait_for_change` uses an asynchronous connection that LISTENs."""

    def __init__(self, url: str, *, namespace: str = "", keys: SecretStr | None = None,
                 connect_timeout_s: int = _CONNECT_TIMEOUT_S) -> None:
        invalid = SenderSourceError(f"{_URL_ENV}: not a postgresql://user:password@host/db URL")
        try:
            parts = urlsplit(url)
            redacted = _redacted(url)
        except ValueError:
            raise invalid from None
        if parts.scheme not in _SCHEMES:
            raise invalid
        self._url = url
        self._passwords = {p for p in (parts.password, unquote(parts.password or "")) if p}
        self.namespace = namespace
        self.description = f"senders registry {redacted} (namespace {namespace!r})"
        self._keys = SenderKeys(keys) if keys is not None else None
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._listener_loop: asyncio.AbstractEventLoop | None = None
        self._listen_failing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresSenderSource:
        if settings.senders_url is None:
            raise SenderSourceError(f"{_URL_ENV} is not set")
        return cls(settings.senders_url.get_secret_value(), namespace=settings.namespace,
                   keys=settings.senders_key)

    def __repr__(self) -> str:
        return f"<PostgresSenderSource {self.description}>"

    # -- connections ---------------------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        """The first line of a driver error, without the password should it quote it."""
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, autocommit=True,
                                   connect_timeout=self._connect_timeout_s,
                                   application_name=f"ics-sms senders {self.namespace}"[:63])
        except psycopg.Error as exc:
            raise SenderSourceError(
                f"{self.description}: cannot connect: {self._reason(exc)}") from None

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _run(self, what: str, work: Callable[[psycopg.Connection[Any]], _T], *,
             retry: bool = False) -> _T:
        """``work`` in one transaction; driver errors become :class:`SenderSourceError`.
        ``retry``: once more on a new connection when a kept one turns out dead."""
        with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                try:
                    self._ensure_schema(conn)
                    with conn.transaction():
                        return work(conn)
                except SenderSourceError:
                    raise
                except psycopg.OperationalError as exc:
                    self._drop()
                    if retry and not fresh and attempt == 1:
                        continue
                    raise SenderSourceError(
                        f"{self.description}: cannot {what}: {self._reason(exc)}") from None
                except psycopg.Error as exc:
                    if conn.broken:
                        self._drop()
                    raise SenderSourceError(
                        f"{self.description}: cannot {what}: {self._reason(exc)}") from None
        raise AssertionError("unreachable")

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._schema_ready:
            return
        tables = (CONFIG_TABLE, SENDERS_TABLE, AUDIT_TABLE)
        row = conn.execute("SELECT count(to_regclass(t)) FROM unnest(%s::text[]) AS t",
                           [list(tables)]).fetchone()
        if row is None or row[0] != len(tables):  # a read-only role never needs CREATE
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                conn.execute(_SCHEMA)
        self._schema_ready = True

    def close(self) -> None:
        with self._lock:
            self._drop()
        if self._listener is not None:
            # The listener belongs to an event loop that may be gone: finish the libpq
            # connection directly (what AsyncConnection.close() does, minus the await).
            self._listener.pgconn.finish()
            self._listener = self._listener_loop = None

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        return self._run("load the senders", self._load, retry=True)

    def _load(self, conn: psycopg.Connection[Any]) -> Snapshot:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return self._read(conn)

    def _read(self, conn: psycopg.Connection[Any]) -> Snapshot:
        """The configuration as this transaction sees it."""
        config = conn.execute(
            f"SELECT version, default_sender, retired FROM {CONFIG_TABLE} WHERE namespace = %s",
            [self.namespace]).fetchone()
        rows = conn.execute(
            f"SELECT name, fields, token_encrypted, key_id FROM {SENDERS_TABLE} "
            "WHERE namespace = %s ORDER BY name", [self.namespace]).fetchall()
        if config is None:
            config = (0, None, [])
        version, default, retired = config
        senders = {}
        for name, fields, ciphertext, key_id in rows:
            data = {**fields, "name": name}
            if ciphertext is not None:
                if self._keys is None:
                    raise SenderSourceError(
                        f"sender {name!r}: its token is encrypted in the registry and "
                        f"{_KEY_ENV} is not set")
                data["token"] = self._keys.decrypt(self.namespace, name, bytes(ciphertext),
                                                   key_id)
            try:
                senders[name] = Sender.model_validate(data)
            except ValidationError as exc:
                raise SenderSourceError(
                    f"{self.description}: sender {name!r}: " + "; ".join(describe(exc))
                ) from None
        try:
            return Snapshot(Senders(
                default=default, senders=senders,
                retired=tuple(RetiredSender.model_validate(r) for r in retired)), str(version))
        except ValidationError as exc:
            raise SenderSourceError(
                f"{self.description}: " + "; ".join(describe(exc))) from None

    def history(self, limit: int = 100) -> list[AuditEntry]:
        def read(conn: psycopg.Connection[Any]) -> list[AuditEntry]:
            rows = conn.execute(
                f"SELECT at, actor, action, sender, detail FROM {AUDIT_TABLE} "
                "WHERE namespace = %s ORDER BY id DESC LIMIT %s",
                [self.namespace, limit]).fetchall()
            return [AuditEntry(at=at, actor=actor, action=action, sender=sender,
                               detail=detail) for at, actor, action, sender, detail in rows]

        return self._run("read the history", read, retry=True)

    # -- writing -------------------------------------------------------------------------------

    def save(self, senders: Senders, *, expected: str | None, actor: str,
             action: str) -> Snapshot:
        if self._keys is None:
            for sender in senders:
                if sender.token is not None:
                    raise SenderSourceError(
                        f"sender {sender.name!r}: an inline token is stored encrypted in the "
                        f"registry and {_KEY_ENV} is not set; set it, or use token_env or "
                        "token_file")

        def write(conn: psycopg.Connection[Any]) -> Snapshot:
            version = self._lock_config(conn)
            if expected is not None and str(version) != expected:
                raise SenderConflict(
                    f"{self.description} changed since it was read (version {expected}, now "
                    f"{version}); run the command again")
            old = self._read(conn).senders
            self._write_senders(conn, old, senders)
            new_version = version + 1
            conn.execute(
                f"UPDATE {CONFIG_TABLE} SET version = %s, default_sender = %s, retired = %s, "
                "updated_at = now() WHERE namespace = %s",
                [new_version, senders.default,
                 Jsonb([r.model_dump(mode="json") for r in senders.retired]), self.namespace])
            changes = _audit_rows(old, senders) or [(None, "saved without changes")]
            self._audit(conn, actor, action, changes)
            self._notify(conn, new_version)
            return Snapshot(senders, str(new_version))

        return self._run("save the senders", write)

    def _lock_config(self, conn: psycopg.Connection[Any]) -> int:
        """The current version, with the namespace's config row locked until commit."""
        conn.execute(f"INSERT INTO {CONFIG_TABLE} (namespace, version) VALUES (%s, 0) "
                     "ON CONFLICT (namespace) DO NOTHING", [self.namespace])
        row = conn.execute(f"SELECT version FROM {CONFIG_TABLE} WHERE namespace = %s "
                           "FOR UPDATE", [self.namespace]).fetchone()
        assert row is not None
        return int(row[0])

    def _write_senders(self, conn: psycopg.Connection[Any], old: Senders,
                       new: Senders) -> None:
        """Only the rows that differ: an unchanged sender keeps its ciphertext."""
        for name in old.senders.keys() - new.senders.keys():
            conn.execute(f"DELETE FROM {SENDERS_TABLE} WHERE namespace = %s AND name = %s",
                         [self.namespace, name])
        for sender in new:
            before = old.senders.get(sender.name)
            if before == sender:  # SecretStr compares the secret values
                continue
            ciphertext = key_id = None
            if sender.token is not None:
                assert self._keys is not None
                ciphertext = self._keys.encrypt(self.namespace, sender.name, sender.token)
                key_id = self._keys.newest
            conn.execute(
                f"INSERT INTO {SENDERS_TABLE} (namespace, name, fields, token_encrypted, key_id)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (namespace, name) DO UPDATE SET "
                "fields = EXCLUDED.fields, token_encrypted = EXCLUDED.token_encrypted, "
                "key_id = EXCLUDED.key_id, updated_at = now()",
                [self.namespace, sender.name, Jsonb(_fields(sender)), ciphertext, key_id])

    def _audit(self, conn: psycopg.Connection[Any], actor: str, action: str,
               changes: list[tuple[str | None, str]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {AUDIT_TABLE} (namespace, actor, action, sender, detail) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(self.namespace, actor, action, sender, detail) for sender, detail in changes])

    def _notify(self, conn: psycopg.Connection[Any], version: int) -> None:
        """Queued now, delivered by PostgreSQL when (and only if) the transaction commits."""
        payload = json.dumps({"namespace": self.namespace, "version": str(version)})
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])

    def rotate_keys(self, actor: str) -> int:
        """Re-encrypt every inline token not yet under the newest key; how many were.

        Run it after putting a new key first in ``ICS_SMS_SENDERS_KEY``; once it has run,
        the old keys can be dropped. The configuration (and its version) stays the same."""
        keys = self._keys
        if keys is None:
            raise SenderSourceError(f"{_KEY_ENV} is not set: there is no key to rotate to")

        def rotate(conn: psycopg.Connection[Any]) -> int:
            self._lock_config(conn)
            rows = conn.execute(
                f"SELECT name, token_encrypted, key_id FROM {SENDERS_TABLE} WHERE namespace = %s"
                " AND token_encrypted IS NOT NULL AND key_id IS DISTINCT FROM %s ORDER BY name",
                [self.namespace, keys.newest]).fetchall()
            for name, ciphertext, key_id in rows:
                token = keys.decrypt(self.namespace, name, bytes(ciphertext), key_id)
                conn.execute(
                    f"UPDATE {SENDERS_TABLE} SET token_encrypted = %s, key_id = %s, "
                    "updated_at = now() WHERE namespace = %s AND name = %s",
                    [keys.encrypt(self.namespace, name, token), keys.newest,
                     self.namespace, name])
            if rows:
                self._audit(conn, actor, "rotate keys", [
                    (None, f"re-encrypted {len(rows)} token(s) with key {keys.newest}")])
            return len(rows)

        return self._run("rotate the keys", rotate)

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for_change(self, version: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                listener = await self._listening(loop)
                if await self._current_version(listener) != version:
                    return
            left = max(0.0, deadline - loop.time())
            async with contextlib.aclosing(listener.notifies(timeout=left)) as notifies:
                async for notify in notifies:
                    if self._moved(notify.payload, version):
                        return
        except asyncio.CancelledError:
            # Perhaps in the middle of a query: the next call starts on a new listener.
            if self._listener is not None:
                self._listener.pgconn.finish()
                self._listener = self._listener_loop = None
            raise
        except (TimeoutError, psycopg.Error, OSError) as exc:
            # The listener is in an unknown state: a new one next call. Until then, the
            # caller's periodic load is the fallback; wait out the timeout, don't spin.
            if not self._listen_failing:
                log.warning("senders registry: not listening for changes, polling instead",
                            source=self.description, reason=self._reason(exc))
            self._listen_failing = True
            await self._drop_listener()
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def _listening(self, loop: asyncio.AbstractEventLoop) -> psycopg.AsyncConnection[Any]:
        if self._listener is not None and (self._listener_loop is not loop
                                           or self._listener.closed):
            self._listener.pgconn.finish()
            self._listener = None
        if self._listener is None:
            listener = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout_s,
                application_name=f"ics-sms senders listener {self.namespace}"[:63])
            try:
                await listener.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                await listener.close()
                raise
            self._listener, self._listener_loop = listener, loop
            if self._listen_failing:
                log.info("senders registry: listening for changes again",
                         source=self.description)
                self._listen_failing = False
        return self._listener

    async def _current_version(self, listener: psycopg.AsyncConnection[Any]) -> str:
        try:
            cursor = await listener.execute(
                f"SELECT version FROM {CONFIG_TABLE} WHERE namespace = %s", [self.namespace])
        except psycopg.errors.UndefinedTable:  # nothing saved anywhere yet
            return "0"
        row = await cursor.fetchone()
        return "0" if row is None else str(row[0])

    def _moved(self, payload: str, version: str) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        return (isinstance(data, dict) and data.get("namespace") == self.namespace
                and data.get("version") != version)

    async def _drop_listener(self) -> None:
        listener, self._listener, self._listener_loop = self._listener, None, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await listener.close()

