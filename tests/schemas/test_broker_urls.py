"""``ICS_SMS_BROKER_URL`` with several addresses: one parser, every password redacted."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.redact import known_secrets, redact
from ics_sms.schemas.settings import Settings, redact_url, split_broker_url

A = "amqp://svc:pw-one-secret@h1:5672/"
B = "amqp://svc:pw-two-secret@h2:5673/prod?heartbeat=30"


def test_one_address() -> None:
    assert split_broker_url(A) == (A,)


def test_several_addresses_in_the_order_given() -> None:
    assert split_broker_url(f"{A},{B}") == (A, B)
    assert split_broker_url(f" {A} , {B} ") == (A, B)
    assert split_broker_url(f"{B},amqps://svc:x@h3/") == (B, "amqps://svc:x@h3/")


def test_a_comma_inside_a_password_or_query_is_not_a_separator() -> None:
    url = "amqp://svc:pa,ss@h1:5672/?x=1,2"
    assert split_broker_url(url) == (url,)
    assert split_broker_url(f"{url},{A}") == (url, A)


@pytest.mark.parametrize(("value", "message"), [
    ("", "is empty"),
    (f"{A},redis://h2:6379/", "scheme redis:// is not supported"),
    (f"{A},memory://x", "memory:// (the embedded broker) cannot be one of several"),
    ("amqp://svc:pw-one-secret@h1:5672,h2:5673/", "give full URLs separated by commas"),
    (f"{A},amqp://svc:pw-two-secret@h2:99999999/", "not a valid URL"),
])
def test_what_is_wrong_is_said_without_passwords(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        split_broker_url(value)
    assert "secret" not in str(caught.value)
    with pytest.raises(ValidationError) as invalid:
        Settings(broker_url=value)
    [line] = describe(invalid.value)  # what the command line shows
    assert line.startswith("broker_url: ") and message in line
    assert "pw-" not in line


def test_the_embedded_broker_alone() -> None:
    assert Settings(broker_url="memory://demo").broker_urls == ("memory://demo",)


def test_every_password_is_redacted() -> None:
    settings = Settings(broker_url=f"{A},{B}")
    assert settings.broker_urls == (A, B)
    assert settings.broker_url_redacted == (
        "amqp://svc:***@h1:5672/,amqp://svc:***@h2:5673/prod?heartbeat=30")
    assert redact_url(f"{A},{B}") == settings.broker_url_redacted
    assert {"pw-one-secret", "pw-two-secret"} <= set(known_secrets(settings))
    line = f"cannot connect to {A},{B}: refused"
    assert "secret" not in redact(line)
    assert "pw-" not in repr(settings)
