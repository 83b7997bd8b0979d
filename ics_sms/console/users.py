"""Operator accounts of the console: who may log in, and who may change senders.

Accounts live beside the senders, so a deployment has one place for its configuration:

* with the PostgreSQL registry (``ICS_SMS_SENDERS_URL``), the table
  ``ics_sms_console_users`` of the same database, keyed by namespace like the senders;
* with the senders file, ``console-users.json`` in the senders file's folder, written
  atomically and owner-only (0600).

Passwords are hashed with scrypt (memory-hard: 16 MiB and ~50 ms per check), with a
random salt per account; the hash names its parameters, so they can be raised later.
Accounts are created with ``ics-sms console users add`` only, never from the web.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg

from ics_sms.schemas.settings import Settings

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "USERS_FILE",
    "FileUserStore",
    "PostgresUserStore",
    "Role",
    "User",
    "UserError",
    "UserStore",
    "hash_password",
    "open_user_store",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 12
USERS_FILE = "console-users.json"
"""Name of the accounts file, in the senders file's folder."""
USERS_TABLE = "ics_sms_console_users"

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-@")


class UserError(ValueError):
    """An account that cannot be created or read, with the reason."""


class Role(StrEnum):
    ADMIN = "admin"
    """May change senders, send test SMS, replay and purge dead letters."""
    VIEWER = "viewer"
    """May look at every page, change nothing."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    def __repr__(self) -> str:
        return f"<User {self.name} role={self.role.value}>"

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a fresh salt."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant time in the comparison)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def check_login(user: User | None, password: str) -> User | None:
    """The user when ``password`` is theirs; as slow for an unknown name as a known one."""
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not (1 <= len(name) <= 64 and set(name) <= _NAME_CHARS):
        raise UserError("name: 1-64 characters of a-z, 0-9, '.', '_', '-', '@'")
    return name


class UserStore(abc.ABC):
    description: str

    @abc.abstractmethod
    def get(self, name: str) -> User | None: ...

    @abc.abstractmethod
    def all(self) -> list[User]: ...

    @abc.abstractmethod
    def put(self, user: User) -> None:
        """Create or replace the account ``user.name``."""

    @abc.abstractmethod
    def delete(self, name: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release connections."""


class FileUserStore(UserStore):
    """``console-users.json`` (0600): ``{"users": {name: {"role": ..., "hash": ...}}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"accounts file {path}"

    def __repr__(self) -> str:
        return f"<FileUserStore {self.path}>"

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.path}: cannot read: {exc}") from None
        users = raw.get("users", {}) if isinstance(raw, dict) else {}
        return users if isinstance(users, dict) else {}

    def _write(self, users: dict[str, Any]) -> None:
        data = json.dumps({"users": users}, indent=2, sort_keys=True).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, name: str) -> User | None:
        entry = self._read().get(name)
        if not isinstance(entry, dict):
            return None
        try:
            return User(name, Role(entry["role"]), str(entry["hash"]))
        except (KeyError, ValueError):
            return None

    def all(self) -> list[User]:
        return [u for u in (self.get(n) for n in sorted(self._read())) if u is not None]

    def put(self, user: User) -> None:
        users = self._read()
        users[user.name] = {"role": user.role.value, "hash": user.password_hash}
        self._write(users)

    def delete(self, name: str) -> bool:
        users = self._read()
        if users.pop(name, None) is None:
            return False
        self._write(users)
        return True


class PostgresUserStore(UserStore):
    """The ``ics_sms_console_users`` table of the senders registry's database."""

    _SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS {USERS_TABLE} (
        namespace text NOT NULL,
        name text NOT NULL,
        role text NOT NULL,
        password_hash text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, name)
    )"""

    def __init__(self, url: str, namespace: str) -> None:
        self._url = url
        self._namespace = namespace
        self.description = f"table {USERS_TABLE} of the senders registry"
        self._ready = False

    def __repr__(self) -> str:
        return f"<PostgresUserStore namespace={self._namespace!r}>"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._url, connect_timeout=10, autocommit=True)
        except psycopg.Error as exc:
            raise UserError(f"cannot reach the senders registry: {type(exc).__name__}") from None
        if not self._ready:
            conn.execute(self._SCHEMA)
            self._ready = True
        return conn

    def get(self, name: str) -> User | None:
        with self._connect() as conn:
            row = conn.execute(f"SELECT role, password_hash FROM {USERS_TABLE} "
                               "WHERE namespace = %s AND name = %s",
                               (self._namespace, name)).fetchone()
        return None if row is None else User(name, Role(row[0]), row[1])

    def all(self) -> list[User]:
        with self._connect() as conn:
            rows = conn.execute(f"SELECT name, role, password_hash FROM {USERS_TABLE} "
                                "WHERE namespace = %s ORDER BY name",
                                (self._namespace,)).fetchall()
        return [User(r[0], Role(r[1]), r[2]) for r in rows]

    def put(self, user: User) -> None:
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO {USERS_TABLE} (namespace, name, role, password_hash) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (namespace, name) DO UPDATE SET "
                "role = EXCLUDED.role, password_hash = EXCLUDED.password_hash, "
                "updated_at = now()",
                (self._namespace, user.name, user.role.value, user.password_hash))

    def delete(self, name: str) -> bool:
        with self._connect() as conn:
            cur = conn.execute(f"DELETE FROM {USERS_TABLE} WHERE namespace = %s AND name = %s",
                               (self._namespace, name))
            return cur.rowcount > 0


def open_user_store(settings: Settings) -> UserStore:
    """The accounts beside the senders: the registry's database, or the file's folder."""
    if settings.senders_url is not None:
        return PostgresUserStore(settings.senders_url.get_secret_value(), settings.namespace)
    return FileUserStore(settings.senders_file.resolve().parent / USERS_FILE)
