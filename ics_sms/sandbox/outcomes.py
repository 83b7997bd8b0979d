"""What happens to an accepted message: fixed for the test numbers, random for the others.

Numbers are in ICS wire form (country code + national number, no ``+``); see the table in
:mod:`ics_sms.sandbox`.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from dataclasses import dataclass

from ics_sms.schemas.ics import FAILURE_CODES

__all__ = [
    "ALWAYS_CLICKED",
    "ALWAYS_DELIVERED",
    "FAILING_PREFIX",
    "FIXED_FATES",
    "NEVER_RECEIPTED",
    "REFUSED",
    "REFUSED_REASON",
    "SERVER_ERROR",
    "Fate",
    "decide",
    "find_url",
    "short_url",
]

ALWAYS_DELIVERED = "919000000001"
ALWAYS_CLICKED = "919000000002"
NEVER_RECEIPTED = "919000000003"
REFUSED = "919000000400"
SERVER_ERROR = "919000000500"
FAILING_PREFIX = "919000000"
"""``FAILING_PREFIX + code`` (e.g. 919000000901) always fails with that ICS code."""

REFUSED_REASON = "number barred (sandbox test number)"
SHORT_URL_BASE = "https://ics.link/"

_RANDOM_FAILURES: tuple[tuple[str, int], ...] = (
    ("914", 30), ("910", 20), ("901", 15), ("912", 10), ("905", 10), ("916", 8), ("904", 5),
    ("900", 2),
)
"""Codes random failures pick from, with weights that look like real traffic."""
_FAILURE_CODES = tuple(code for code, _ in _RANDOM_FAILURES)
_FAILURE_WEIGHTS = tuple(weight for _, weight in _RANDOM_FAILURES)
_URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True, slots=True)
class Fate:
    """The outcome of one accepted message.

    ``code`` is the ICS failure code when the message fails, None when it is delivered.
    ``receipt`` False means ICS never sends a receipt for it (a lost DLR).
    """

    code: str | None = None
    always_click: bool = False
    receipt: bool = True

    @property
    def delivered(self) -> bool:
        return self.code is None

    @property
    def description(self) -> str:
        return "Delivered to handset" if self.code is None else FAILURE_CODES[self.code]


_DELIVERED = Fate()
_FAILED = {code: Fate(code=code) for code in FAILURE_CODES}

FIXED_FATES: dict[str, Fate] = {
    ALWAYS_DELIVERED: _DELIVERED,
    ALWAYS_CLICKED: Fate(always_click=True),
    NEVER_RECEIPTED: Fate(receipt=False),
    **{FAILING_PREFIX + code: fate for code, fate in _FAILED.items()},
}


def decide(to: str, rng: random.Random, delivery_ratio: float) -> Fate:
    """The fate of a message to ``to``: fixed for a test number, else drawn from ``rng``."""
    fate = FIXED_FATES.get(to)
    if fate is not None:
        return fate
    if rng.random() < delivery_ratio:
        return _DELIVERED
    return _FAILED[rng.choices(_FAILURE_CODES, _FAILURE_WEIGHTS)[0]]


def find_url(text: str) -> str | None:
    """The first http(s) URL in ``text``, without trailing punctuation."""
    match = _URL.search(text)
    return match.group().rstrip(".,;:!?)]}") if match else None


def short_url(smsgid: str, url: str) -> str:
    """A stable short link for ``url`` in message ``smsgid``, like ICS's own."""
    digest = hashlib.blake2b(f"{smsgid}\x1f{url}".encode(), digest_size=6).digest()
    return SHORT_URL_BASE + base64.urlsafe_b64encode(digest).decode()
