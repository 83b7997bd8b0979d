"""The senders TOML file as a :class:`~ics_sms.stores.senders.SenderSource`.

The version is a hash of the file's bytes, so an edit in place, an atomic rename and a
Kubernetes ConfigMap update (which swaps a symlink) are all seen; a missing file is an
empty configuration. Changes are found by looking at the file (``stat``) once a second.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from pathlib import Path

from ics_sms.schemas.senders import SenderError, Senders, load_senders, save_senders
from ics_sms.stores.senders import SenderConflict, SenderSource, SenderSourceError, Snapshot

__all__ = ["FileSenderSource"]

_POLL_S = 1.0
_MISSING = "missing"


class FileSenderSource(SenderSource):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"senders file {path}"

    def __repr__(self) -> str:
        return f"<FileSenderSource {self.path}>"

    def _version(self) -> str:
        try:
            return hashlib.blake2b(self.path.read_bytes(), digest_size=12).hexdigest()
        except FileNotFoundError:
            return _MISSING
        except OSError as exc:
            raise SenderSourceError(f"{self.path}: cannot read: {exc.strerror}") from None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def load(self) -> Snapshot:
        # Hash then parse then hash again: a file replaced while being read is read again.
        for _ in range(3):
            before = self._version()
            try:
                senders = load_senders(self.path)
            except SenderSourceError:
                raise
            except SenderError as exc:
                raise SenderSourceError(str(exc)) from None
            if self._version() == before:
                return Snapshot(senders, before)
        raise SenderSourceError(f"{self.path}: changing too fast to be read consistently")

    def save(self, senders: Senders, *, expected: str | None, actor: str,
             action: str) -> Snapshot:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._version()
            if expected is not None and current != expected:
                raise SenderConflict(
                    f"{self.path} changed since it was read; run the command again")
            try:
                save_senders(self.path, senders)
            except OSError as exc:
                raise SenderSourceError(f"{self.path}: cannot write: {exc.strerror}") from None
            return Snapshot(senders, self._version())

    async def wait_for_change(self, version: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen = self._stat()
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(_POLL_S, left))
            if self._stat() != seen:
                return
