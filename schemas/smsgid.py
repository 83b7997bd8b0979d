"""The correlation id we give ICS: ``<message_id>.<mac>``, bound to the sending sender.

The MAC (HMAC-SHA256 under ``ICS_SMS_CALLBACK_SECRET``, 64 bits, base64url) covers the
message id *and the name of the sender* that submitted it, so the receiver refuses receipts
for messages we never sent, even when a tracking URL has leaked, and refuses one sender's
smsgid posted to another sender's tracking URL. During a secret rotation the previous secret
is accepted too.

The signed text is ``"\\0smsgid/2\\0" + message_id + "\\0" + sender``. Message ids are
checked to be :data:`~ics_sms.schemas.messages.Identifier`-shaped (no NUL), so the split
between message id and sender is unambiguous, and the tag keeps these MACs apart from the
*legacy* ones (smsgids signed before sender binding: the MAC covers the message id alone).
:meth:`SmsgidSigner.verify_legacy` checks those; a legacy smsgid proves which message it is
but not which sender sent it, so the receiver accepts one only when the message context
confirms the sender (see :mod:`ics_sms.callbacks.receipts`). Nothing signs legacy MACs
any more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

__all__ = ["SmsgidSigner"]

_MAC_BYTES = 8
_TAG = b"\x00smsgid/2\x00"
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
"""Same shape as ``schemas.messages.Identifier`` (which every signed message id has)."""


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
    def _mac(key: hmac.HMAC, signed: bytes) -> str:
        mac = key.copy()
        mac.update(signed)
        return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES]).rstrip(b"=").decode()

    @staticmethod
    def _bound(message_id: str, sender: str) -> bytes:
        return b"%s%s\x00%s" % (_TAG, message_id.encode(), sender.encode())

    def sign(self, message_id: str, sender: str) -> str:
        """The smsgid of ``message_id`` as submitted by the sender named ``sender``."""
        return f"{message_id}.{self._mac(self._keys[0], self._bound(message_id, sender))}"

    def verify(self, smsgid: str, sender: str) -> str | None:
        """The message id inside ``smsgid`` when it was signed for ``sender`` under any key,
        else None."""
        parts = _split(smsgid)
        if parts is None:
            return None
        message_id, mac = parts
        return message_id if self._any_key(mac, self._bound(message_id, sender)) else None

    def verify_legacy(self, smsgid: str) -> str | None:
        """The message id of a legacy smsgid (MAC over the message id only), else None.

        Such an smsgid does not say which sender sent the message: the caller must confirm
        that some other way before accepting a receipt for it.
        """
        parts = _split(smsgid)
        if parts is None:
            return None
        message_id, mac = parts
        return message_id if self._any_key(mac, message_id.encode()) else None

    def _any_key(self, mac: str, signed: bytes) -> bool:
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(self._mac(key, signed), mac)
        return valid


def _split(smsgid: str) -> tuple[str, str] | None:
    message_id, dot, mac = smsgid.rpartition(".")
    if not dot or not mac.isascii() or _MESSAGE_ID.fullmatch(message_id) is None:
        return None
    return message_id, mac
