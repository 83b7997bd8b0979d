"""Phone numbers: everything that reaches ICS is canonical E.164, or refused with a reason."""

from __future__ import annotations

import pytest

from ics_sms.schemas.phone import InvalidNumber, normalize_e164


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Indian mobile numbers: the fast path, with the usual ways people write them
        ("+919812345678", "+919812345678"),
        ("+91 98123 45678", "+919812345678"),
        ("+91-98123-45678", "+919812345678"),
        ("+91 (981) 234-5678", "+919812345678"),
        ("+91.981.234.5678", "+919812345678"),
        ("+91\u00a09812345678", "+919812345678"),
        ("  +919812345678  ", "+919812345678"),
        ("00919812345678", "+919812345678"),
        ("0091 98123 45678", "+919812345678"),
        ("+916000000000", "+916000000000"),
        # Indian landline and other countries go through phonenumbers
        ("+91 22 2345 6789", "+912223456789"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+447911123456", "+447911123456"),
        ("0044 7911 123456", "+447911123456"),
        ("+1-650-253-0000", "+16502530000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+65 9123 4567", "+6591234567"),
    ],
)
def test_possible_numbers_normalise_to_e164(raw: str, expected: str) -> None:
    assert normalize_e164(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("9812345678", "leading +"),  # national format: the country is unknown
        ("919812345678", "leading +"),  # ICS's own format is not E.164
        ("", "leading +"),
        ("+91abc1234567", "only digits"),
        ("++919812345678", "only digits"),
        ("+91 98123 45678 ext 9", "only digits"),
        ("+9111234", "not a possible phone number"),  # too short for India
        ("+1 999", "not a possible phone number"),
        ("+123456789012345678", "not a possible phone number"),  # longer than E.164 allows
        ("+0123456789", "not a phone number"),  # no country code starts with 0
        ("+12", "not a phone number"),
    ],
)
def test_impossible_numbers_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber, match=reason):
        normalize_e164(raw)


def test_invalid_number_is_a_value_error_so_pydantic_reports_it_per_field() -> None:
    assert issubclass(InvalidNumber, ValueError)


@pytest.mark.parametrize("raw", ["+919812345678", "+442079460958", "+16502530000"])
def test_normalising_is_idempotent(raw: str) -> None:
    assert normalize_e164(normalize_e164(raw)) == normalize_e164(raw)
