"""The correlation id we give ICS: ``<message_id>.<mac>``.

The MAC (HMAC-SHA256 of the message id under ``ICS_SMS_CALLBACK_SECRET``, 64 bits,
base64url) lets the receiver refuse receipts for messages we never sent, even when a
tracking URL has leaked. During a secret rotation the previous secret is accepted too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["SmsgidSigner"]

_MAC_BYTES = 8


class SmsgidSigner:
    """Makes and checks smsgids. Holds the secrets; its repr does not show them."""

    __slots__ = ("_keys",)

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        if not secret:
            raise ValueError("the callback secret must not be empty")
        # keyed once: each MAC copies the prepared state instead of re-keying
        self._keys = [hmac.new(k.encode(), digestmod=hashlib.sha256)
                      for k in (secret, *previous) if k]

    def __repr__(self) -> str:
        return f"<SmsgidSigner keys={len(self._keys)}>"

    @staticmethod
    def _mac(key: hmac.HMAC, message_id: str) -> str:
        mac = key.copy()
        mac.update(message_id.encode())
        return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES]).rstrip(b"=").decode()

    def sign(self, message_id: str) -> str:
        return f"{message_id}.{self._mac(self._keys[0], message_id)}"

    def verify(self, smsgid: str) -> str | None:
        """The message id inside ``smsgid`` when its MAC is valid under any key, else None."""
        message_id, dot, mac = smsgid.rpartition(".")
        if not dot or not message_id or not smsgid.isascii():
            return None
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(self._mac(key, message_id), mac)
        return message_id if valid else None
