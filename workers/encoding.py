"""SMS encoding and segment counting (ICS_API.md, "Encoding and segments").

A text is GSM-7 when every character is in the 3GPP TS 23.038 default alphabet (basic
table) or its extension table; extension characters (``^{}\\[~]|€`` and form feed) are
sent as an escape pair and cost two septets. GSM-7 fits 160 septets in one SMS and 153 in
each part of a concatenated SMS. Any other character makes the whole text UCS-2: 70 UTF-16
units in one SMS, 67 per part, where a character outside the BMP (most emoji) costs two
units. A part never ends inside an escape pair or a surrogate pair, so a text may need
one part more than ``ceil(units / per_part)``.

:func:`analyse` is on the worker's hot path: an all-ASCII text is classified by one
``bytes.translate`` in C, other texts by one regular-expression scan and one encode; the
Python-level work is a few steps per SMS part, never per character.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import NamedTuple

from ics_sms.schemas.messages import Encoding

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_PART_SEPTETS",
    "GSM7_SINGLE_SEPTETS",
    "UCS2_PART_UNITS",
    "UCS2_SINGLE_UNITS",
    "TextInfo",
    "analyse",
    "split",
]

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67

_BASIC_CHARS = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION_CHARS = "\f^{}\\[~]|€"

GSM7_BASIC: frozenset[str] = frozenset(_BASIC_CHARS)
"""The 127 characters of the GSM-7 basic table (the escape code itself excluded)."""
GSM7_EXTENSION: frozenset[str] = frozenset(_EXTENSION_CHARS)
"""Characters of the extension table: each costs two septets (escape + code)."""

_BASIC_ASCII = bytes(ord(c) for c in _BASIC_CHARS if c.isascii())
_EXTENSION_ASCII = bytes(ord(c) for c in _EXTENSION_CHARS if c.isascii())
_NOT_GSM = re.compile(f"[^{re.escape(_BASIC_CHARS + _EXTENSION_CHARS)}]")
_ESCAPE = "\x1b"
_HIGH_SURROGATES = range(0xD800, 0xDC00)


class TextInfo(NamedTuple):
    """How a text travels: its encoding, how many SMS parts, and its size in units.

    ``units`` is septets for GSM-7 (escape pairs count two) and UTF-16 code units for UCS-2.
    """

    encoding: Encoding
    segments: int
    units: int


_GSM7_SINGLE = tuple(TextInfo(Encoding.GSM7, 1, n) for n in range(GSM7_SINGLE_SEPTETS + 1))
"""Answers for the commonest texts, built once: plain GSM-7 in one SMS."""


def analyse(text: str) -> TextInfo:
    """Encoding, segment count and size of ``text`` as ICS will send it."""
    if text.isascii():
        special = text.encode("ascii").translate(None, _BASIC_ASCII)
        if not special:
            size = len(text)
            if size <= GSM7_SINGLE_SEPTETS:
                return _GSM7_SINGLE[size]
            return TextInfo(Encoding.GSM7, -(-size // GSM7_PART_SEPTETS), size)
        if special.translate(None, _EXTENSION_ASCII):
            return _ucs2_info(text)  # a back-tick or a control character
        return _gsm7_info(text)
    if _NOT_GSM.search(text) is None:
        return _gsm7_info(text)
    return _ucs2_info(text)


def split(text: str) -> list[str]:
    """The parts ``text`` is sent in; ``"".join(split(text)) == text``.

    A part never ends between an escape and its extension character, nor between the two
    halves of a surrogate pair.
    """
    if analyse(text).encoding is Encoding.GSM7:
        septets = _septets(text)
        bounds = _bounds(len(septets), _gsm7_cuts(septets))
        return [septets[start:end].replace(_ESCAPE, "") for start, end in bounds]
    data, one_unit_per_char = _utf16(text)
    cuts = _ucs2_cuts(data)
    if not one_unit_per_char:
        cuts = _char_indices(text, cuts)
    return [text[start:end] for start, end in _bounds(len(text), cuts)]


def _septets(text: str) -> str:
    """``text`` with one character per septet: ESC before each extension character."""
    for char in _EXTENSION_CHARS:
        if char in text:
            text = text.replace(char, _ESCAPE + char)
    return text


def _gsm7_info(text: str) -> TextInfo:
    septets = _septets(text)
    size = len(septets)
    if size <= GSM7_SINGLE_SEPTETS:
        return _GSM7_SINGLE[size]
    return TextInfo(Encoding.GSM7, len(_gsm7_cuts(septets)) + 1, size)


def _ucs2_info(text: str) -> TextInfo:
    data, one_unit_per_char = _utf16(text)
    size = len(data) >> 1
    if size <= UCS2_SINGLE_UNITS:
        return TextInfo(Encoding.UCS2, 1, size)
    if one_unit_per_char:  # no surrogate pairs: every boundary is a good one
        return TextInfo(Encoding.UCS2, -(-size // UCS2_PART_UNITS), size)
    return TextInfo(Encoding.UCS2, len(_ucs2_cuts(data)) + 1, size)


def _utf16(text: str) -> tuple[bytes, bool]:
    """UTF-16 units of ``text``, and whether each character is exactly one unit.

    A ``str`` may hold lone surrogate code points (never valid JSON, but possible in
    Python); they are encoded as they are and make the answer False.
    """
    try:
        data = text.encode("utf-16-le")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass"), False
    return data, len(data) >> 1 == len(text)


def _char_indices(text: str, unit_offsets: list[int]) -> list[int]:
    """Character indices of UTF-16 unit offsets that fall on character boundaries."""
    indices: list[int] = []
    wanted = iter(unit_offsets)
    target = next(wanted, None)
    unit = 0
    for index, char in enumerate(text):
        if unit == target:
            indices.append(index)
            target = next(wanted, None)
        unit += 2 if ord(char) > 0xFFFF else 1
    return indices


def _gsm7_cuts(septets: str) -> list[int]:
    return _cuts(len(septets), GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS,
                 lambda unit: septets[unit] == _ESCAPE)


def _ucs2_cuts(data: bytes) -> list[int]:
    def opens_pair(unit: int) -> bool:
        return int.from_bytes(data[2 * unit : 2 * unit + 2], "little") in _HIGH_SURROGATES

    return _cuts(len(data) >> 1, UCS2_SINGLE_UNITS, UCS2_PART_UNITS, opens_pair)


def _cuts(size: int, single: int, per_part: int, opens_pair: Callable[[int], bool]) -> list[int]:
    """Unit offsets where a new part starts; empty when ``size`` fits one SMS.

    Parts are filled greedily (the fewest parts when the order is kept); a part whose last
    unit would open a pair ends one unit early, so the pair moves whole to the next part.
    """
    if size <= single:
        return []
    cuts: list[int] = []
    start = 0
    while size - start > per_part:
        end = start + per_part
        if opens_pair(end - 1):
            end -= 1
        cuts.append(end)
        start = end
    return cuts


def _bounds(size: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    return list(pairwise([0, *cuts, size]))
