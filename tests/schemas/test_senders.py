"""Senders: configured once by an operator, kept in a TOML file, the token never shown."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.senders import (
    ClickTracking,
    Lane,
    Sender,
    SenderError,
    Senders,
    SenderType,
    TokenSource,
    load_senders,
    new_tracking_token,
    save_senders,
)

TOKEN = "ics-secret-token-0123456789abcdef"


def make_sender(name: str = "acme-otp", **changes: Any) -> Sender:
    fields: dict[str, Any] = {
        "name": name,
        "type": "service_implicit",
        "sender_id": "ACMEIN",
        "username": "acme",
        "token_env": "ACME_ICS_TOKEN",
    }
    if {"token", "token_file"} & changes.keys():
        del fields["token_env"]
    fields.update(changes)
    return Sender.model_validate(fields)


def reasons(**changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make_sender(**changes)
    return "; ".join(describe(caught.value))


# -- one sender -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender_type", "sender_id"),
    [
        ("service_implicit", "ACMEIN"),
        ("transactional", "ACMEBK"),
        ("promotional", "123456"),
        ("promotional", "000000"),
    ],
)
def test_headers_that_fit_the_sender_type_are_accepted(sender_type: str, sender_id: str) -> None:
    assert make_sender(type=sender_type, sender_id=sender_id).sender_id == sender_id


@pytest.mark.parametrize(
    ("sender_type", "sender_id", "reason"),
    [
        ("service_implicit", "123456", "exactly 6 letters"),
        ("service_implicit", "ACME12", "exactly 6 letters"),
        ("service_implicit", "ÄCMEIN", "exactly 6 letters"),  # DLT headers are ASCII
        ("transactional", "ACME-T", "exactly 6 letters"),
        ("promotional", "ACMEIN", "exactly 6 digits"),
        ("promotional", "12345A", "exactly 6 digits"),
        ("promotional", "١٢٣٤٥٦", "exactly 6 digits"),  # Arabic-Indic digits are not ASCII
        ("service_implicit", "ACMEI", "at least 6 characters"),
        ("promotional", "1234567", "at most 6 characters"),
    ],
)
def test_headers_that_do_not_fit_the_type_are_refused_clearly(
    sender_type: str, sender_id: str, reason: str
) -> None:
    message = reasons(type=sender_type, sender_id=sender_id)
    assert reason in message
    assert "sender_id" in message


def test_the_header_error_names_the_sender_type() -> None:
    assert "transactional" in reasons(type="transactional", sender_id="123456")


def test_check_header_raises_sender_error() -> None:
    with pytest.raises(SenderError, match="promotional header is exactly 6 digits"):
        SenderType.PROMOTIONAL.check_header("ACMEIN")


@pytest.mark.parametrize(
    ("sender_type", "lane"),
    [
        (SenderType.SERVICE_IMPLICIT, Lane.SERVICE),
        (SenderType.TRANSACTIONAL, Lane.SERVICE),
        (SenderType.PROMOTIONAL, Lane.PROMOTIONAL),
    ],
)
def test_each_sender_type_has_its_lane(sender_type: SenderType, lane: Lane) -> None:
    sender_id = "123456" if sender_type is SenderType.PROMOTIONAL else "ACMEIN"
    assert make_sender(type=sender_type, sender_id=sender_id).lane is lane


@pytest.mark.parametrize(
    "sources",
    [
        {},
        {"token": TOKEN, "token_env": "X"},
        {"token": TOKEN, "token_file": "/run/secrets/ics"},
        {"token_env": "X", "token_file": "/run/secrets/ics"},
        {"token": TOKEN, "token_env": "X", "token_file": "/run/secrets/ics"},
    ],
)
def test_exactly_one_token_source_is_required(sources: dict[str, str]) -> None:
    fields = {"name": "a", "type": "service_implicit", "sender_id": "ACMEIN", "username": "u"}
    with pytest.raises(ValidationError) as caught:
        Sender.model_validate({**fields, **sources})
    assert "exactly one of token, token_env or token_file" in "; ".join(describe(caught.value))


@pytest.mark.parametrize(("field", "value"), [("token", ""), ("token_env", "")])
def test_an_empty_token_source_is_not_a_token_source(field: str, value: str) -> None:
    # A sender whose token is empty can never authenticate at ICS: refuse it when configured,
    # not on the first send.
    with pytest.raises(ValidationError):
        make_sender("acme-otp", **{"token_env": None, field: value})


@pytest.mark.parametrize(
    ("changes", "source"),
    [
        ({"token": TOKEN}, TokenSource.INLINE),
        ({"token_env": "ACME_ICS_TOKEN"}, TokenSource.ENV),
        ({"token_file": "/run/secrets/ics"}, TokenSource.FILE),
    ],
)
def test_token_source_says_where_the_token_lives(
    changes: dict[str, Any], source: TokenSource
) -> None:
    assert make_sender(**changes).token_source is source


def test_resolve_token_inline() -> None:
    assert make_sender(token=TOKEN).resolve_token({}).get_secret_value() == TOKEN


def test_resolve_token_from_the_given_environment() -> None:
    sender = make_sender(token_env="ACME_ICS_TOKEN")
    token = sender.resolve_token({"ACME_ICS_TOKEN": TOKEN})
    assert isinstance(token, SecretStr)
    assert token.get_secret_value() == TOKEN


def test_resolve_token_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_ICS_TOKEN", TOKEN)
    assert make_sender(token_env="ACME_ICS_TOKEN").resolve_token().get_secret_value() == TOKEN


@pytest.mark.parametrize("environ", [{}, {"ACME_ICS_TOKEN": ""}])
def test_resolve_token_from_an_unset_variable_says_which(environ: dict[str, str]) -> None:
    with pytest.raises(SenderError, match=r"'acme-otp'.*ACME_ICS_TOKEN is not set"):
        make_sender(token_env="ACME_ICS_TOKEN").resolve_token(environ)


def test_resolve_token_from_a_file_strips_the_newline(tmp_path: Path) -> None:
    secret = tmp_path / "ics.token"
    secret.write_text(TOKEN + "\n")
    assert make_sender(token_file=secret).resolve_token().get_secret_value() == TOKEN


def test_resolve_token_from_a_missing_file_says_which(tmp_path: Path) -> None:
    missing = tmp_path / "nope.token"
    with pytest.raises(SenderError) as caught:
        make_sender(token_file=missing).resolve_token()
    assert "'acme-otp'" in str(caught.value)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize(
    "token", [TOKEN, "short", "exactly-12ch", "x", "0123456789a", "p@ss wörd with spaces"]
)
def test_masked_token_never_shows_the_secret(token: str) -> None:
    masked = make_sender(token=token).masked_token()
    assert masked.startswith("****")
    assert token not in masked
    revealed = masked.removeprefix("****")
    assert len(revealed) <= 2
    assert len(revealed) < len(token) // 4 or not revealed


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"token_env": "ACME_ICS_TOKEN"}, "(from $ACME_ICS_TOKEN)"),
        ({"token_file": "/run/secrets/ics"}, "(from file /run/secrets/ics)"),
    ],
)
def test_masked_token_of_external_sources_says_where_it_comes_from(
    changes: dict[str, Any], shown: str
) -> None:
    assert make_sender(**changes).masked_token() == shown


def test_the_token_is_hidden_in_repr_str_and_dumps() -> None:
    sender = make_sender(token=TOKEN)
    assert TOKEN not in repr(sender)
    assert TOKEN not in str(sender)
    assert TOKEN not in sender.model_dump_json()
    assert "token" not in sender.model_dump()


def test_to_toml_carries_the_inline_token_and_nothing_unset() -> None:
    data = make_sender(token=TOKEN).to_toml()
    assert data["token"] == TOKEN
    assert "name" not in data
    assert "token_env" not in data
    assert "dlt_entity_id" not in data


def test_to_toml_of_an_env_token_holds_no_token() -> None:
    data = make_sender(token_env="ACME_ICS_TOKEN").to_toml()
    assert "token" not in data
    assert data["token_env"] == "ACME_ICS_TOKEN"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "-dash-first"}, "name"),
        ({"username": ""}, "username"),
        ({"dlt_entity_id": "12011591"}, "dlt_entity_id"),
        ({"dlt_entity_id": "120115910000000000X"}, "dlt_entity_id"),
        ({"rate_per_s": 0}, "rate_per_s"),
        ({"rate_per_s": -1}, "rate_per_s"),
        ({"click_tracking": "bitly"}, "click_tracking"),
        ({"type": "marketing"}, "type"),
        ({"tracking_token": "short"}, "tracking_token"),
        ({"tracking_token": "has/slash/and/is/long/enough"}, "tracking_token"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_sender_fields_are_named(changes: dict[str, Any], field: str) -> None:
    assert reasons(**changes).startswith(f"{field}: ")


def test_a_complete_sender() -> None:
    sender = make_sender(
        type="promotional", sender_id="712345", click_tracking="ics",
        dlt_entity_id="1201159100000000000", rate_per_s=25,
    )
    assert sender.click_tracking is ClickTracking.ICS
    assert sender.rate_per_s == 25.0
    assert sender.lane is Lane.PROMOTIONAL


def test_tracking_tokens_are_unguessable_and_url_safe() -> None:
    tokens = {new_tracking_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) >= 22 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


def test_each_sender_gets_its_own_tracking_path() -> None:
    a, b = make_sender("a"), make_sender("b")
    assert a.tracking_token != b.tracking_token
    assert a.tracking_path() == f"/ics/{a.tracking_token}/receipts"


# -- the collection of senders --------------------------------------------------------------


def test_an_empty_configuration_has_no_default() -> None:
    senders = Senders()
    assert len(senders) == 0
    assert senders.default is None
    assert senders.get(None) is None


def test_the_first_sender_added_becomes_the_default() -> None:
    senders = Senders().add(make_sender("first")).add(make_sender("second"))
    assert senders.default == "first"
    assert senders.get(None) == senders.get("first")
    assert [s.name for s in senders] == ["first", "second"]


def test_adding_returns_a_new_configuration() -> None:
    empty = Senders()
    empty.add(make_sender("a"))
    assert len(empty) == 0


def test_adding_a_name_twice_is_refused() -> None:
    senders = Senders().add(make_sender("a"))
    with pytest.raises(SenderError, match="'a' already exists"):
        senders.add(make_sender("a"))


def test_the_default_can_be_changed() -> None:
    senders = Senders().add(make_sender("a")).add(make_sender("b")).with_default("b")
    assert senders.default == "b"
    assert senders.get(None) is senders.get("b")


def test_get_an_unknown_name_is_none() -> None:
    assert Senders().add(make_sender("a")).get("zz") is None


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.with_default("zz"),
        lambda s: s.remove("zz"),
        lambda s: s.replace(make_sender("zz")),
    ],
)
def test_unknown_names_are_refused_listing_the_known_ones(operation: Any) -> None:
    senders = Senders().add(make_sender("beta")).add(make_sender("alpha"))
    with pytest.raises(SenderError, match=r"no sender named 'zz' \(known: alpha, beta\)"):
        operation(senders)


def test_unknown_names_in_an_empty_configuration_say_none_is_configured() -> None:
    with pytest.raises(SenderError, match="none configured"):
        Senders().with_default("a")


def test_removing_the_default_requires_a_new_default() -> None:
    senders = Senders().add(make_sender("a")).add(make_sender("b"))
    with pytest.raises(SenderError, match=r"'a' is the default sender.*--new-default"):
        senders.remove("a")
    after = senders.remove("a", new_default="b")
    assert after.default == "b"
    assert [s.name for s in after] == ["b"]


@pytest.mark.parametrize("new_default", ["a", "zz"])
def test_the_new_default_must_be_another_existing_sender(new_default: str) -> None:
    senders = Senders().add(make_sender("a")).add(make_sender("b"))
    with pytest.raises(SenderError, match="not another existing sender"):
        senders.remove("a", new_default=new_default)


def test_removing_the_last_sender_leaves_no_default() -> None:
    after = Senders().add(make_sender("a")).remove("a")
    assert len(after) == 0
    assert after.default is None


def test_removing_another_sender_keeps_the_default() -> None:
    after = Senders().add(make_sender("a")).add(make_sender("b")).remove("b")
    assert after.default == "a"


def test_replace_keeps_the_default_and_the_order() -> None:
    senders = Senders().add(make_sender("a")).add(make_sender("b"))
    after = senders.replace(make_sender("a", rate_per_s=5))
    assert after.default == "a"
    assert after.get("a") is not None and after.get("a").rate_per_s == 5  # type: ignore[union-attr]


def test_by_tracking_token_finds_the_sender() -> None:
    a, b = make_sender("a"), make_sender("b")
    senders = Senders().add(a).add(b)
    assert senders.by_tracking_token(b.tracking_token) == b
    assert senders.by_tracking_token(a.tracking_token) == a


@pytest.mark.parametrize("token", ["", "unknown-token-123456", "ünïcödé-from-a-url", "a" * 500])
def test_by_tracking_token_is_none_for_anything_else(token: str) -> None:
    # The token comes from the URL ICS (or anybody) calls: any text is possible.
    senders = Senders().add(make_sender("a"))
    assert senders.by_tracking_token(token) is None


@pytest.mark.parametrize(
    ("default", "names", "reason"),
    [
        ("zz", ["a"], r"default: sender 'zz' is not defined \(senders: a\)"),
        (None, ["a"], r"default: not set; name one of the senders \(a\)"),
        ("a", [], "default: sender 'a' is named but no sender is defined"),
    ],
)
def test_a_configuration_must_name_an_existing_default(
    default: str | None, names: list[str], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        Senders(default=default, senders={n: make_sender(n) for n in names})


def test_two_senders_may_not_share_a_tracking_token() -> None:
    shared = new_tracking_token()
    with pytest.raises(ValidationError, match="share a tracking_token"):
        Senders(
            default="a",
            senders={n: make_sender(n, tracking_token=shared) for n in ("a", "b")},
        )


# -- the senders file ----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_file_is_an_empty_configuration(tmp_path: Path) -> None:
    assert len(load_senders(tmp_path / "senders.toml")) == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    token_file = tmp_path / "ics.token"
    senders = (
        Senders()
        .add(make_sender("otp", token=TOKEN, dlt_entity_id="1201159100000000000"))
        .add(make_sender("promo", type="promotional", sender_id="712345", token_env="PROMO",
                         click_tracking="self", rate_per_s=12.5))
        .add(make_sender("bank", type="transactional", sender_id="ACMEBK", token_file=token_file))
        .with_default("promo")
    )
    path = tmp_path / "conf" / "senders.toml"
    save_senders(path, senders)
    loaded = load_senders(path)
    assert loaded == senders
    assert loaded.get("otp").resolve_token().get_secret_value() == TOKEN  # type: ignore[union-attr]
    assert loaded.get("bank").token_file == token_file  # type: ignore[union-attr]


def test_the_file_is_the_documented_toml_layout(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    sender = make_sender("acme-otp", token_env="ACME_ICS_TOKEN")
    save_senders(path, Senders().add(sender))
    document = tomllib.loads(path.read_text())
    assert document["default"] == "acme-otp"
    table = document["senders"]["acme-otp"]
    assert table["type"] == "service_implicit"
    assert table["sender_id"] == "ACMEIN"
    assert table["token_env"] == "ACME_ICS_TOKEN"
    assert table["tracking_token"] == sender.tracking_token


def test_a_file_holding_an_inline_token_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    save_senders(path, Senders().add(make_sender("a", token=TOKEN)))
    assert mode(path) == 0o600


def test_a_file_without_secrets_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    save_senders(path, Senders().add(make_sender("a", token_env="X")))
    assert mode(path) == 0o644
    assert TOKEN not in path.read_text()


def test_the_mode_follows_the_content_on_every_save(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    with_secret = Senders().add(make_sender("a", token_env="X")).add(make_sender("b", token=TOKEN))
    save_senders(path, with_secret)
    assert mode(path) == 0o600
    save_senders(path, with_secret.remove("b"))
    assert mode(path) == 0o644


def test_saving_is_atomic_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "senders.toml"
    save_senders(path, Senders().add(make_sender("a")))
    before = path.read_bytes()

    def broken_replace(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        save_senders(path, Senders().add(make_sender("a")).add(make_sender("b", token=TOKEN)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["senders.toml"]  # no temp file left


def test_saving_never_leaves_a_partial_file_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "senders.toml"
    save_senders(path, Senders().add(make_sender("a")))
    seen: list[bytes] = []
    real_replace = os.replace

    def spying_replace(src: str, dst: Path) -> None:
        seen.append(path.read_bytes())  # what a reader sees just before the swap
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    save_senders(path, Senders().add(make_sender("a")).add(make_sender("b")))
    assert seen and b"[senders.b]" not in seen[0]
    assert b"[senders.b]" in path.read_bytes()


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text("default = 'a\n[senders.a\n")
    with pytest.raises(SenderError, match="not valid TOML") as caught:
        load_senders(path)
    assert str(path) in str(caught.value)


def test_a_senders_key_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text("senders = 5\n")
    with pytest.raises(SenderError, match=r"\[senders\] must be a table"):
        load_senders(path)


def test_a_sender_entry_that_is_not_a_table_is_a_sender_error(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text('default = "acme"\n[senders]\nacme = "ACMEIN"\n')
    with pytest.raises(SenderError) as caught:
        load_senders(path)
    assert str(path) in str(caught.value)
    assert "acme" in str(caught.value)


def _write_sender(path: Path, name: str, **fields: object) -> None:
    base: dict[str, object] = {"type": "service_implicit", "sender_id": "ACMEIN",
                               "username": "acme", "token_env": "X"}
    base.update(fields)
    lines = [f'default = "{name}"', f"[senders.{name}]"]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in base.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rate_per_s": -3}, "rate_per_s"),
        ({"click_tracking": "maybe"}, "click_tracking"),
        ({"dlt_entity_id": "42"}, "dlt_entity_id"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_invalid_fields_in_the_file_name_path_and_field(
    tmp_path: Path, fields: dict[str, object], field: str
) -> None:
    path = tmp_path / "senders.toml"
    _write_sender(path, "acme", **fields)
    with pytest.raises(SenderError) as caught:
        load_senders(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert field in message


def test_an_invalid_sender_in_the_file_is_named(tmp_path: Path) -> None:
    # With several senders in one file, "sender_id: ..." alone does not say which one to fix.
    path = tmp_path / "senders.toml"
    path.write_text(
        'default = "good"\n'
        '[senders.good]\ntype = "service_implicit"\nsender_id = "ACMEIN"\n'
        'username = "u"\ntoken_env = "X"\n'
        '[senders.broken-promo]\ntype = "promotional"\nsender_id = "ACMEIN"\n'
        'username = "u"\ntoken_env = "X"\n'
    )
    with pytest.raises(SenderError) as caught:
        load_senders(path)
    assert "broken-promo" in str(caught.value)
    assert "6 digits" in str(caught.value)


def test_a_file_with_senders_but_an_unknown_default_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    _write_sender(path, "acme")
    path.write_text(path.read_text().replace('default = "acme"', 'default = "other"'))
    with pytest.raises(SenderError) as caught:
        load_senders(path)
    assert str(caught.value) == f"{path}: default: sender 'other' is not defined (senders: acme)"


def test_a_file_without_a_default_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    _write_sender(path, "acme")
    path.write_text(path.read_text().replace('default = "acme"', ""))
    with pytest.raises(SenderError) as caught:
        load_senders(path)
    assert str(caught.value) == f"{path}: default: not set; name one of the senders (acme)"


def test_an_unreadable_file_is_a_sender_error(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(SenderError, match="cannot read"):
        load_senders(path)


def test_named_gives_the_sender_or_names_the_known_ones() -> None:
    one = Sender(name="a", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                 username="acme", token_env="A_TOKEN")
    senders = Senders(default="a", senders={"a": one})
    assert senders.named("a") is one
    with pytest.raises(SenderError, match=r"no sender named 'b' \(known: a\)"):
        senders.named("b")
