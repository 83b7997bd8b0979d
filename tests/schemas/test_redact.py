"""Redaction: no tracking token, bearer token, URL password or known secret survives."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ics_sms.schemas.redact import (
    MASK,
    MIN_SECRET_CHARS,
    Redactor,
    known_secrets,
    redact,
    tracking_tokens,
)
from ics_sms.schemas.senders import Sender, Senders, SenderType
from ics_sms.schemas.settings import Settings

TOKEN = "Zq3vY8c1XkP0s-Ab_9tLmw"  # a tracking token as new_tracking_token() makes them


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"/ics/{TOKEN}/receipts", "/ics/***/receipts"),
        (f"POST /ics/{TOKEN}/receipts HTTP/1.1x", "POST /ics/***/receipts HTTP/1.1x"),
        (f"https://hooks.example.com/ics/{TOKEN}/receipts?x=1",
         "https://hooks.example.com/ics/***/receipts?x=1"),
        # how aiohttp quotes a malformed request line: bytes repr, escapes, truncation
        (f"b'POST /ics/{TOKEN}/rec\\xffeipts HTTP/1.1'", "b'POST /ics/***/rec\\xffeipts HTTP/1.1'"),
        (f"b'POST /ics/{TOKEN}/rec eipts HTTP/1.1'", "b'POST /ics/***/rec eipts HTTP/1.1'"),
        (f"bytearray(b'/ics/{TOKEN}/receipts?aaaa...')", "bytearray(b'/ics/***/receipts?aaaa...')"),
        (f"/ics/{TOKEN[:9]}", "/ics/***"),  # cut off mid-token
        (f"/ics/{TOKEN} /receipts", "/ics/*** /receipts"),
        # a dlrurl echoed by ICS, JSON-escaped or percent-encoded
        (f'"dlrurl":"https:\\/\\/h\\/ics\\/{TOKEN}\\/receipts"',
         '"dlrurl":"https:\\/\\/h\\/ics\\/***\\/receipts"'),
        (f"dlrurl=https%3A%2F%2Fh%2Fics%2F{TOKEN}%2Freceipts",
         "dlrurl=https%3A%2F%2Fh%2Fics%2F***%2Freceipts"),
        ("Authorization: Bearer s3cr3t-t0ken", "Authorization: ***"),
        ('{"authorization": "Basic dXNlcjpwYXNz"}', '{"authorization": "***"}'),
        ("token was bearer abc.def-ghi, then", "token was bearer ***, then"),
        ("cannot connect to amqp://app:hunter2@rabbit:5672/sms: refused",
         "cannot connect to amqp://app:***@rabbit:5672/sms: refused"),
        ("to amqp://app:hunter2@rabbit:99999/ (bad port)",
         "to amqp://***@rabbit:99999/ (bad port)"),
        ("nothing secret here: mid-3f2a9c1e +447700900123", None),
        ("/ics//receipts and /static/ics.css", None),
    ],
)
def test_patterns_redact_whoever_wrote_the_text(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_an_unknown_senders_token_goes_too() -> None:
    """Pattern-based: a removed sender's token in an old URL is still a token."""
    assert "gone-sender-token-0123" not in redact("/ics/gone-sender-token-0123/receipts")


def test_known_secrets_go_wherever_they_are() -> None:
    text = "ICS said: invalid token ics-secret-token-42 for user acme (cb: callback-key-xyz)"
    assert redact(text, ["ics-secret-token-42", "callback-key-xyz"]) == (
        f"ICS said: invalid token {MASK} for user acme (cb: {MASK})")


def test_a_secret_inside_another_is_masked_whole() -> None:
    assert redact("abcdefgh-ijkl", ["abcdefgh", "abcdefgh-ijkl"]) == MASK


def test_too_short_values_are_not_masked_everywhere() -> None:
    short = "x" * (MIN_SECRET_CHARS - 1)
    assert redact(f"a {short} b", [short, ""]) == f"a {short} b"


def test_a_redactor_learns_secrets_and_never_shows_them() -> None:
    redactor = Redactor(["first-secret-1"])
    redactor.add("second-secret-2", "")
    assert redactor("first-secret-1 second-secret-2") == f"{MASK} {MASK}"
    assert "first" not in repr(redactor) and "second" not in repr(redactor)
    once = redactor.extended("per-call-secret")
    assert once("per-call-secret first-secret-1") == f"{MASK} {MASK}"
    assert redactor("per-call-secret") == "per-call-secret"  # the original is unchanged


def test_tracking_tokens_are_found_in_a_dlrurl() -> None:
    assert tracking_tokens(f"https://hooks.example.com/ics/{TOKEN}/receipts") == [TOKEN]
    assert tracking_tokens("https://hooks.example.com/") == []


def test_known_secrets_of_settings_and_senders(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-ics-token-1\n")
    senders = Senders().add(
        Sender(name="inline", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
               username="acme", token=SecretStr("inline-ics-token-1"), tracking_token=TOKEN)
    ).add(
        Sender(name="env", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
               username="acme", token_env="ACME_TOKEN")
    ).add(
        Sender(name="file", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
               username="acme", token_file=token_file)
    ).add(
        Sender(name="unset", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
               username="acme", token_env="NOT_SET_ANYWHERE")
    )
    settings = Settings(callback_secret=SecretStr("callback-secret-now-0123456789abcdef"),
                        callback_secret_previous=SecretStr("callback-secret-before"),
                        broker_url=SecretStr("amqp://app:broker-password@rabbit/"))
    found = known_secrets(settings, senders, environ={"ACME_TOKEN": "env-ics-token-1"})
    assert {"inline-ics-token-1", "env-ics-token-1", "file-ics-token-1", TOKEN,
            "callback-secret-now-0123456789abcdef", "callback-secret-before",
            "broker-password"} <= set(found)
    assert all(s.tracking_token in found for s in senders)
    assert known_secrets() == []
