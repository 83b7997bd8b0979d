"""Redaction: secrets and tracking tokens out of any text before it is logged or published.

One implementation for every place text leaves the process: the log pipeline (our events
and the records of aiohttp, pika, asyncio ...), and whatever the worker takes from ICS.

What goes, whoever wrote it:

- the token of any tracking path ``/ics/<token>/...``, of any sender, known or not, also
  JSON-escaped (``\\/ics\\/``) or percent-encoded (``%2Fics%2F``);
- a bearer token (``Bearer <token>``) and the value of an ``Authorization`` header;
- the password of a URL (``amqp://user:***@host``, see :func:`redact_url`);
- every known secret, verbatim (ICS tokens, the callback secrets, tracking tokens).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping

from ics_sms.schemas.senders import SenderError, Senders
from ics_sms.schemas.settings import Settings, broker_passwords, redact_url

__all__ = [
    "MASK",
    "MIN_SECRET_CHARS",
    "SECRETS",
    "Redactor",
    "known_secrets",
    "redact",
    "tracking_tokens",
]

MASK = "***"

MIN_SECRET_CHARS = 6
"""Known secrets shorter than this are not masked verbatim: masking every "abc" in every
line would make logs unreadable, and a secret that short protects nothing anyway."""

_SLASH = r"(?:/|\\/|%2[Ff])"
_TRACKING = re.compile(rf"({_SLASH}ics{_SLASH})([^/\\\s\"'<>?#&%]+)")
"""A tracking path (:meth:`~ics_sms.schemas.senders.Sender.tracking_path`): the token runs
to the next path separator, backslash, space, quote or query."""
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_TRACKING, rf"\g<1>{MASK}"),
    # "Authorization: Basic abc", "authorization": "Bearer abc"
    (re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)(?:[a-z]+\s+)?[^\s\"',;]+"),
     rf"\g<1>{MASK}"),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"), rf"\g<1>{MASK}"),
)
_URL_WITH_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@\"'<>]*@[^\s/\"'<>]*")


def _redact_url_match(match: re.Match[str]) -> str:
    url = match.group()
    try:
        return redact_url(url)
    except ValueError:  # not parseable (e.g. a port out of range): hide all the user info
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{MASK}@{rest.rpartition('@')[2]}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without tracking tokens, bearer tokens, URL passwords and ``secrets``."""
    return _redact(text, _ordered(secrets))


def tracking_tokens(text: str) -> list[str]:
    """The tokens of the tracking paths in ``text`` (e.g. of a ``dlrurl``)."""
    return [match.group(2) for match in _TRACKING.finditer(text)]


def known_secrets(settings: Settings | None = None, senders: Senders | None = None,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """What a process must never show: callback secrets, the broker password, every
    sender's tracking token and ICS token (a token that cannot be read is skipped: the
    worker reports that itself)."""
    found: list[str] = []
    if settings is not None:
        found.append(settings.callback_secret.get_secret_value())
        if settings.callback_secret_previous is not None:
            found.append(settings.callback_secret_previous.get_secret_value())
        found.extend(broker_passwords(settings.broker_url.get_secret_value()))
    for sender in senders or ():
        found.append(sender.tracking_token)
        with contextlib.suppress(SenderError):
            found.append(sender.resolve_token(environ).get_secret_value())
    return [secret for secret in found if len(secret) >= MIN_SECRET_CHARS]


def _ordered(secrets: Iterable[str]) -> tuple[str, ...]:
    """Longest first, so that a secret containing another is masked whole."""
    return tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len,
                        reverse=True))


@functools.lru_cache(maxsize=256)
def _trigger(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """Matches where redaction might change ``text``: one search spares the common case
    (an ICS message id, a log value without a URL) the substitutions."""
    literals = "".join(f"{re.escape(secret)}|" for secret in secrets)
    return re.compile(rf"{literals}ics|://|(?i:bearer|authorization)")


def _redact(text: str, secrets: tuple[str, ...], trigger: re.Pattern[str] | None = None) -> str:
    if (trigger or _trigger(secrets)).search(text) is None:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if "://" in text:
        text = _URL_WITH_USERINFO.sub(_redact_url_match, text)
    return text


class Redactor:
    """:func:`redact` with a set of known secrets that can grow (senders are read late)."""

    __slots__ = ("_secrets", "_trigger")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._trigger = _trigger(())
        self.add(*secrets)

    def __repr__(self) -> str:
        return f"<Redactor secrets={len(self._secrets)}>"  # never the values

    def __call__(self, text: str) -> str:
        return _redact(text, self._secrets, self._trigger)

    def add(self, *secrets: str) -> None:
        """Mask these values from now on (too short or empty ones are ignored)."""
        self._secrets = _ordered((*self._secrets, *secrets))
        self._trigger = _trigger(self._secrets)

    def extended(self, *secrets: str) -> Redactor:
        """A redactor that also masks ``secrets`` (e.g. for one request)."""
        return Redactor((*self._secrets, *secrets))


SECRETS = Redactor()
"""The secrets this process knows. The command line adds the configured ones when it reads
the senders file; the log pipeline and the ICS adapter redact with it."""
