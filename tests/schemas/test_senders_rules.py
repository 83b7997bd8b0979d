"""DLT rules of senders, each with the reason an operator reads; the file keeps retired and
disabled senders; the pure changes the CLI makes (set, disable, enable, import)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import (
    RetiredSender,
    Sender,
    SenderError,
    Senders,
    SenderType,
    check_dlt_entity_id,
    dlt_problem,
    dump_senders,
    load_senders,
    request_problems,
    save_senders,
)

PEID = "1201159100000000000"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def make(name: str = "otp", **changes: Any) -> Sender:
    fields: dict[str, Any] = {"name": name, "type": "service_implicit", "sender_id": "ACMEIN",
                              "username": "acme", "token_env": "T", **changes}
    return Sender.model_validate(fields)


def refused(**changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make(**changes)
    return "; ".join(describe(caught.value))


def request(to: str = "+919812345678", **fields: Any) -> SendRequest:
    return SendRequest.model_validate({"message_id": "m-1", "campaign_id": "c", "to": to,
                                       "text": "Hi", **fields})


# -- the header (sender_id) against the type -------------------------------------------------
@pytest.mark.parametrize("sender_type", ["service_implicit", "transactional"])
def test_a_service_or_transactional_header_is_six_letters(sender_type: str) -> None:
    assert refused(type=sender_type, sender_id="ACME12") == (
        f"sender_id: 'ACME12': a {sender_type} header is exactly 6 letters A-Z (DLT)")


def test_a_promotional_header_is_six_digits() -> None:
    assert refused(type="promotional", sender_id="ACMEIN") == (
        "sender_id: 'ACMEIN': a promotional header is exactly 6 digits (DLT)")


def test_lower_case_letters_are_stored_upper_case_as_dlt_registers_them() -> None:
    assert make(sender_id="acmeIn").sender_id == "ACMEIN"
    assert SenderType.TRANSACTIONAL.check_header("acmebk") == "ACMEBK"


def test_check_header_is_the_one_rule_and_raises_sender_error() -> None:
    with pytest.raises(SenderError, match=r"^'12345A': a promotional header is exactly 6"):
        SenderType.PROMOTIONAL.check_header("12345A")


# -- the DLT entity id -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["12011591", "120115910000000000X", "1" * 20,
                                   "١٢٠١١٥٩١٠٠٠٠٠٠٠٠٠٠٠"])
def test_a_dlt_entity_id_is_nineteen_ascii_digits(value: str) -> None:
    assert refused(dlt_entity_id=value) == (
        f"dlt_entity_id: {value!r}: a DLT entity id is exactly 19 digits")
    with pytest.raises(SenderError):
        check_dlt_entity_id(value)


def test_a_valid_dlt_entity_id_is_kept() -> None:
    assert make(dlt_entity_id=PEID).dlt_entity_id == PEID


# -- the DLT rules of a message (the worker's and publish's one check) ------------------------
def test_a_plus_91_message_needs_the_senders_entity_id() -> None:
    problem = dlt_problem(request(dlt_template_id="1207"), make())
    assert problem is not None
    assert problem.message == "sender 'otp' has no DLT entity id, required for +91 numbers"
    assert (problem.field, problem.reason) == (
        "sender", "'otp' has no DLT entity id, required for +91 numbers")


def test_a_plus_91_message_needs_a_template_id() -> None:
    problem = dlt_problem(request(), make(dlt_entity_id=PEID))
    assert problem is not None
    assert problem.message == "dlt_template_id is required for +91 numbers"
    assert problem.field == "dlt_template_id"


def test_dlt_rules_apply_to_plus_91_only() -> None:
    assert dlt_problem(request("+14155550123"), make()) is None
    assert dlt_problem(request(dlt_template_id="1207"), make(dlt_entity_id=PEID)) is None


def test_request_problems_name_the_field_and_the_reason() -> None:
    senders = Senders().add(make(dlt_entity_id=PEID)).add(make("off", disabled="billing"))
    assert request_problems(request(dlt_template_id="1"), senders) == []
    assert request_problems(request(sender="nope", dlt_template_id="1"), senders) == [
        "sender: no sender named 'nope' (known: off, otp)"]
    assert request_problems(request(sender="off"), senders) == [
        "sender: 'off' is disabled (billing): the workers do not send its messages while "
        "it is disabled",
        "sender: 'off' has no DLT entity id, required for +91 numbers"]
    assert request_problems(request(), Senders()) == [
        "sender: none named and no default sender is configured"]


# -- changes -----------------------------------------------------------------------------
def test_changed_keeps_the_tracking_token_and_swaps_the_token_source() -> None:
    sender = make(token_env=None, token=SecretStr("secret-token-123456"))
    changed = sender.changed(token_env="NEW", username="other")
    assert changed.tracking_token == sender.tracking_token
    assert (changed.token, changed.token_env, changed.username) == (None, "NEW", "other")


def test_changed_checks_the_header_against_a_new_type() -> None:
    with pytest.raises(ValidationError, match="promotional header is exactly 6 digits"):
        make().changed(type="promotional")
    assert make().changed(type="promotional", sender_id="712345").lane.value == "promotional"


def test_disable_and_enable() -> None:
    senders = Senders().add(make())
    off = senders.disable("otp", "invoice unpaid")
    assert off.named("otp").disabled == "invoice unpaid"
    assert off.enable("otp").named("otp").disabled is None
    with pytest.raises(SenderError, match="no sender named 'x'"):
        senders.disable("x", "r")


def test_retired_senders_in_grace_and_pruned() -> None:
    senders = Senders().add(make("a")).add(make("b"))
    old = senders.remove("b", now=NOW - timedelta(days=10))
    assert [r.name for r in old.in_grace(NOW, 7 * 86400)] == []
    assert [r.name for r in old.in_grace(NOW, 30 * 86400)] == ["b"]
    assert old.pruned(NOW, 7 * 86400).retired == ()


def test_import_keeps_tracking_tokens_and_retires_the_missing(tmp_path: Path) -> None:
    current = Senders().add(make("a")).add(make("b"))
    path = tmp_path / "new.toml"
    path.write_text('default = "a"\n[senders.a]\ntype = "transactional"\nsender_id = "ACMEBK"\n'
                    'username = "u"\ntoken_env = "T"\n')
    merged = current.imported(load_senders(path), NOW)
    assert merged.named("a").tracking_token == current.named("a").tracking_token
    assert merged.named("a").type is SenderType.TRANSACTIONAL
    assert [(r.name, r.tracking_token, r.removed_at) for r in merged.retired] == [
        ("b", current.named("b").tracking_token, NOW)]


# -- the file keeps disabled and retired -----------------------------------------------------
def test_disabled_and_retired_survive_the_file(tmp_path: Path) -> None:
    senders = (Senders().add(make("a")).add(make("b")).disable("a", "paused by ops")
               .remove("b", now=NOW))
    path = tmp_path / "senders.toml"
    save_senders(path, senders)
    text = path.read_text()
    assert "[[retired]]" in text and 'disabled = "paused by ops"' in text
    loaded = load_senders(path)
    assert loaded == senders
    assert loaded.retired == (RetiredSender(name="b", tracking_token=senders.retired[0]
                                            .tracking_token, removed_at=NOW),)


def test_an_invalid_retired_entry_names_it(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text('[[retired]]\nname = "b"\ntracking_token = "abcdefghijklmnop"\n')
    with pytest.raises(SenderError, match=r"retired #1: removed_at: Field required"):
        load_senders(path)


def test_dump_leaves_inline_tokens_out_unless_asked() -> None:
    secret = "inline-secret-token-0123"
    senders = Senders().add(make(token_env=None, token=SecretStr(secret)))
    assert secret not in dump_senders(senders, include_secrets=False)
    assert secret in dump_senders(senders)
