"""Click tracking by ics-sms itself: replace each link in a text with a short link.

Codes are derived, not drawn: ``HMAC(secret, message_id + url)`` in base64url, 10
characters (60 bits). They are unguessable without the callback secret, unique per
message and link (so a click is attributed to one message), the same for the same URL
twice in one text, and the same on every retry of the message, so a retried submission
does not leave dead links behind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["CODE_LENGTH", "Rewrite", "find_urls", "link_code", "rewrite_links"]

CODE_LENGTH = 10

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\"\u00bb\u201d\u2019\u2026"
_PAIRS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True, slots=True)
class Rewrite:
    text: str
    links: dict[str, str]  # code -> original URL


def _trim(url: str) -> str:
    """Drop sentence punctuation after a URL, keeping balanced closing brackets."""
    while url and url[-1] in _TRAILING:
        last = url[-1]
        opener = _PAIRS.get(last)
        if opener is not None and url.count(opener) >= url.count(last):
            break
        url = url[:-1]
    return url


def find_urls(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, url)`` of each http(s) link in ``text``."""
    found = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        if len(url) > len("https://"):
            found.append((match.start(), match.start() + len(url), url))
    return found


def link_code(secret: bytes, message_id: str, url: str) -> str:
    digest = hmac.new(secret, f"{message_id}\x1f{url}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:CODE_LENGTH]


def rewrite_links(text: str, message_id: str, secret: bytes, base_url: str) -> Rewrite:
    """Replace every link with ``{base_url}/l/{code}``; the text is unchanged without links."""
    urls = find_urls(text)
    if not urls:
        return Rewrite(text, {})
    prefix = base_url.rstrip("/") + "/l/"
    links: dict[str, str] = {}
    parts: list[str] = []
    position = 0
    for start, end, url in urls:
        code = link_code(secret, message_id, url)
        links[code] = url
        parts += [text[position:start], prefix, code]
        position = end
    parts.append(text[position:])
    return Rewrite("".join(parts), links)
