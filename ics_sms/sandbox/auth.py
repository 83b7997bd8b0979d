"""Who is calling: ``Authorization: Bearer <token>`` or ``Basic base64(user:token)``.

Tokens are secrets: they are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode
from collections.abc import Mapping

from pydantic import SecretStr

__all__ = ["Accounts", "AuthError"]


class AuthError(Exception):
    """Missing or wrong credentials; the message is safe to show (it holds no secret)."""


class Accounts:
    """The ICS accounts the sandbox knows. With none, any credentials are accepted."""

    __slots__ = ("_tokens",)

    def __init__(self, accounts: Mapping[str, SecretStr]) -> None:
        self._tokens = [(user, token.get_secret_value().encode()) for user, token in
                        accounts.items()]

    def __repr__(self) -> str:
        return f"<Accounts users={len(self._tokens)}>"

    def set(self, user: str, token: SecretStr) -> None:
        """Give ``user`` the token ``token`` from now on (a new account, or a token ICS
        regenerated: the user's previous token is refused from now on)."""
        self._tokens = [(known, secret) for known, secret in self._tokens if known != user]
        self._tokens.append((user, token.get_secret_value().encode()))

    def users(self) -> list[str]:
        return sorted(user for user, _ in self._tokens)

    def authenticate(self, header: str | None) -> str | None:
        """The user the credentials in ``header`` belong to.

        None means "any user": the sandbox has no accounts configured and the request
        carried a bearer token. Raises :class:`AuthError` when the credentials do not fit.
        """
        user, secret = _parse(header)
        if not self._tokens:
            return user
        for known_user, token in self._tokens:
            if hmac.compare_digest(token, secret) and user in (None, known_user):
                return known_user
        raise AuthError("invalid credentials")


def _parse(header: str | None) -> tuple[str | None, bytes]:
    """``(user or None, secret)`` from an Authorization header."""
    if not header:
        raise AuthError("missing Authorization header (Bearer or Basic)")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return None, value.encode()
    if scheme.lower() == "basic" and value:
        return _basic(value)
    raise AuthError("unsupported Authorization scheme: use Bearer or Basic")


def _basic(value: str) -> tuple[str, bytes]:
    try:
        decoded = b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user or not password:
        raise AuthError("malformed Basic credentials")
    return user, password.encode()
