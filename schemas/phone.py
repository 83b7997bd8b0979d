"""Phone number normalisation to E.164.

A cheap exact check covers Indian mobile numbers (the bulk of the traffic); everything
else goes through ``phonenumbers`` so impossible numbers are refused with a reason.
"""

from __future__ import annotations

import re

import phonenumbers

__all__ = ["InvalidNumber", "normalize_e164"]

_INDIAN_MOBILE = re.compile(r"\+91[6-9]\d{9}")
_SEPARATORS = str.maketrans("", "", " -().\u00a0")


class InvalidNumber(ValueError):
    """The text is not a possible E.164 phone number."""


def normalize_e164(raw: str) -> str:
    """Return ``raw`` as canonical E.164 (``+919812345678``) or raise :class:`InvalidNumber`."""
    number = raw.strip().translate(_SEPARATORS)
    if number.startswith("00"):
        number = "+" + number[2:]
    if _INDIAN_MOBILE.fullmatch(number):
        return number
    if not number.startswith("+"):
        raise InvalidNumber("must be E.164 with a leading + and country code, e.g. +919812345678")
    if not number[1:].isdigit():
        raise InvalidNumber("may contain only digits after the leading +")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidNumber("is not a possible phone number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
