"""``ics-sms senders``: what an operator types to configure senders, and what they see."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from ics_sms.cli import senders_cmd
from ics_sms.cli.main import cli
from ics_sms.sandbox import RunningSandbox, SandboxConfig, start_sandbox
from ics_sms.schemas.messages import Encoding, ReceiptEvent, SendRequest, Status
from ics_sms.schemas.senders import TokenSource, load_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import open_context_store
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.trial import TEST_CAMPAIGN_ID

TOKEN = "ics-bearer-TOKEN-do-not-print-4f2a9c"
PEID = "1201159100000000000"
PUBLIC_URL = "https://hooks.example.com"


pytestmark = pytest.mark.usefixtures("isolated_logging")


class Cli:
    """Runs ``ics-sms`` in process with a senders file of the test's own."""

    def __init__(self, tmp_path: Path) -> None:
        self.senders_file = tmp_path / "conf" / "senders.toml"
        self.env = {
            "ICS_SMS_SENDERS_FILE": str(self.senders_file),
            "ICS_SMS_PUBLIC_URL": PUBLIC_URL,
            "ICS_SMS_LOG_FORMAT": "json",
        }
        self.outputs: list[str] = []

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        result = CliRunner().invoke(cli, list(args), input=input, env={**self.env, **env})
        self.outputs.append(result.output)
        return result

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self(*args, input=input)
        assert isinstance(result.exception, SystemExit | None), result.exception
        assert result.exit_code == 0, result.output
        return result.stdout

    def fails(self, *args: str, input: str | None = None, **env: str) -> str:
        """The one-line reason of a refused command."""
        result = self(*args, input=input, **env)
        assert result.exit_code != 0, result.output
        assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("Error: ")
        return lines[0].removeprefix("Error: ")

    def add(self, name: str, *options: str, **kw: Any) -> str:
        return self.ok("senders", "add", name, "--type", "service_implicit",
                       "--sender-id", "ACMEIN", "--username", "acme", *options, **kw)


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- add ------------------------------------------------------------------------------------


def test_add_with_a_token_from_stdin(run: Cli) -> None:
    out = run.add("acme-otp", "--token", "-", input=TOKEN + "\n")
    assert "added sender acme-otp (the default sender)" in out
    sender = load_senders(run.senders_file).get("acme-otp")
    assert sender is not None
    assert sender.token_source is TokenSource.INLINE
    assert sender.resolve_token().get_secret_value() == TOKEN
    assert mode(run.senders_file) == 0o600


def test_add_prints_the_delivery_tracking_url(run: Cli) -> None:
    out = run.add("acme-otp", "--token-env", "ACME_TOKEN")
    sender = load_senders(run.senders_file).get("acme-otp")
    assert sender is not None
    assert f"{PUBLIC_URL}/ics/{sender.tracking_token}/receipts" in out


def test_add_with_a_token_from_the_environment(run: Cli) -> None:
    run.add("acme-otp", "--token-env", "ACME_TOKEN")
    sender = load_senders(run.senders_file).get("acme-otp")
    assert sender is not None and sender.token_env == "ACME_TOKEN"
    assert mode(run.senders_file) == 0o644


def test_add_with_a_token_file_stores_an_absolute_path(
    run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ics.token").write_text(TOKEN)
    monkeypatch.chdir(tmp_path)
    run.add("acme-otp", "--token-file", "ics.token")
    sender = load_senders(run.senders_file).get("acme-otp")
    assert sender is not None
    assert sender.token_file == tmp_path / "ics.token"
    assert sender.resolve_token().get_secret_value() == TOKEN
    assert mode(run.senders_file) == 0o644


def test_add_every_option(run: Cli) -> None:
    run.ok("senders", "add", "promo", "--type", "promotional", "--sender-id", "712345",
           "--username", "acme", "--token-env", "T", "--click-tracking", "ics",
           "--dlt-entity-id", "1201159100000000000", "--rate-per-s", "25")
    sender = load_senders(run.senders_file).get("promo")
    assert sender is not None
    assert (sender.sender_id, sender.click_tracking.value, sender.dlt_entity_id,
            sender.rate_per_s) == ("712345", "ics", "1201159100000000000", 25.0)


def test_only_the_first_sender_added_becomes_the_default(run: Cli) -> None:
    run.add("first", "--token-env", "T")
    out = run.add("second", "--token-env", "T")
    assert "default" not in out.splitlines()[0]
    assert load_senders(run.senders_file).default == "first"


def test_a_token_on_the_command_line_is_refused(run: Cli) -> None:
    reason = run.fails("senders", "add", "acme", "--type", "service_implicit",
                       "--sender-id", "ACMEIN", "--username", "acme", "--token", TOKEN)
    assert "standard input" in reason
    assert not run.senders_file.exists()


@pytest.mark.parametrize(
    ("options", "stdin", "reason"),
    [
        ((), None, "exactly one of --token-stdin, --token-env VAR or --token-file PATH"),
        (("--token-stdin", "--token-env", "A"), TOKEN, "exactly one of"),
        (("--token-env", "A", "--token-file", "/x"), None, "exactly one of"),
        (("--token", "-", "--token-env", "A"), TOKEN, "exactly one of"),
        (("--token", "-"), "\n", "standard input held no token"),
        (("--token", "-"), "", "standard input held no token"),
    ],
)
def test_token_options_are_checked(
    run: Cli, options: tuple[str, ...], stdin: str | None, reason: str
) -> None:
    message = run.fails("senders", "add", "acme", "--type", "service_implicit",
                        "--sender-id", "ACMEIN", "--username", "acme", *options, input=stdin)
    assert reason in message


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (("--type", "promotional", "--sender-id", "ACMEIN"), "6 digits"),
        (("--type", "service_implicit", "--sender-id", "123456"), "6 letters"),
        (("--type", "service_implicit", "--sender-id", "ACME"), "sender_id"),
        (("--type", "service_implicit", "--sender-id", "ACMEIN", "--dlt-entity-id", "12"),
         "dlt_entity_id"),
        (("--type", "service_implicit", "--sender-id", "ACMEIN", "--rate-per-s", "0"),
         "rate_per_s"),
    ],
)
def test_invalid_senders_are_refused_in_one_line(
    run: Cli, options: tuple[str, ...], reason: str
) -> None:
    message = run.fails("senders", "add", "acme", *options, "--username", "acme",
                        "--token", "-", input=TOKEN)
    assert message.startswith("sender 'acme': ")
    assert reason in message
    assert not run.senders_file.exists()


def test_adding_an_existing_name_is_refused(run: Cli) -> None:
    run.add("acme", "--token-env", "T")
    assert "already exists" in run.fails(
        "senders", "add", "acme", "--type", "service_implicit", "--sender-id", "ACMEIN",
        "--username", "acme", "--token-env", "T",
    )


@pytest.mark.parametrize(
    "args",
    [
        ("senders", "add", "acme", "--type", "marketing", "--sender-id", "ACMEIN",
         "--username", "u", "--token-env", "T"),
        ("senders", "add", "acme", "--type", "service_implicit", "--username", "u"),
        ("senders", "add", "acme", "--type", "service_implicit", "--sender-id", "ACMEIN",
         "--username", "u", "--token-env", "T", "--rate-per-s", "fast"),
        ("senders", "frobnicate"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(run: Cli, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Error: " in result.stderr


# -- list / show ----------------------------------------------------------------------------


def test_list_without_senders_says_how_to_add_one(run: Cli) -> None:
    assert "ics-sms senders add" in run.ok("senders", "list")


def test_list_marks_the_default(run: Cli) -> None:
    run.add("first", "--token-env", "T")
    run.add("second", "--token-env", "T")
    run.ok("senders", "default", "second")
    lines = run.ok("senders", "list").splitlines()
    assert len(lines) == 2
    by_name = {line[2:].split()[0]: line for line in lines}
    assert by_name["second"].startswith("* ")
    assert by_name["first"].startswith("  ")
    assert "ACMEIN" in by_name["first"]
    assert "service_implicit" in by_name["first"]


def test_show_masks_the_token_and_prints_the_tracking_url(run: Cli) -> None:
    run.add("acme-otp", "--token", "-", input=TOKEN)
    out = run.ok("senders", "show", "acme-otp")
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["token"] == "****" + TOKEN[-2:]
    sender = load_senders(run.senders_file).get("acme-otp")
    assert sender is not None
    assert fields["tracking_url"] == f"{PUBLIC_URL}/ics/{sender.tracking_token}/receipts"
    assert fields["default"] == "yes"
    assert fields["lane"] == "service"
    assert fields["sender_id"] == "ACMEIN"


def test_show_follows_the_public_url(run: Cli) -> None:
    run.add("acme-otp", "--token-env", "T")
    result = run("senders", "show", "acme-otp", ICS_SMS_PUBLIC_URL="https://sms.example.org/in/")
    assert "tracking_url     https://sms.example.org/in/ics/" in result.stdout


def test_show_says_where_an_external_token_lives(run: Cli) -> None:
    run.add("acme-otp", "--token-env", "ACME_TOKEN")
    assert "(from $ACME_TOKEN)" in run.ok("senders", "show", "acme-otp")


def test_show_of_an_unknown_sender_lists_the_known_ones(run: Cli) -> None:
    run.add("acme-otp", "--token-env", "T")
    assert run.fails("senders", "show", "nope") == "no sender named 'nope' (known: acme-otp)"


# -- default / remove / set -----------------------------------------------------------------


def test_default_changes_the_default(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.add("b", "--token-env", "T")
    assert "default sender is now b" in run.ok("senders", "default", "b")
    assert load_senders(run.senders_file).default == "b"


def test_default_of_an_unknown_sender_is_refused(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert "no sender named 'zz'" in run.fails("senders", "default", "zz")
    assert load_senders(run.senders_file).default == "a"


def test_removing_the_default_needs_a_new_default(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.add("b", "--token-env", "T")
    assert "--new-default" in run.fails("senders", "remove", "a")
    assert len(load_senders(run.senders_file)) == 2
    out = run.ok("senders", "remove", "a", "--new-default", "b")
    assert "removed sender a; default is now b" in out
    senders = load_senders(run.senders_file)
    assert senders.default == "b"
    assert [s.name for s in senders] == ["b"]


def test_removing_another_sender_keeps_the_default(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.add("b", "--token-env", "T")
    run.ok("senders", "remove", "b")
    assert load_senders(run.senders_file).default == "a"


def test_removing_the_only_sender(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.ok("senders", "remove", "a")
    assert len(load_senders(run.senders_file)) == 0
    assert "no senders configured" in run.ok("senders", "list")


def test_removing_an_unknown_sender_is_refused(run: Cli) -> None:
    assert "no sender named 'zz' (known: none configured)" in run.fails("senders", "remove", "zz")


def test_set_changes_fields_and_keeps_the_token(run: Cli) -> None:
    run.add("a", "--token", "-", input=TOKEN)
    before = load_senders(run.senders_file).get("a")
    out = run.ok("senders", "set", "a", "--rate-per-s", "7.5", "--click-tracking", "self")
    assert "rate_per_s=7.5" in out
    after = load_senders(run.senders_file).get("a")
    assert after is not None and before is not None
    assert after.rate_per_s == 7.5
    assert after.click_tracking.value == "self"
    assert after.resolve_token().get_secret_value() == TOKEN
    assert after.tracking_token == before.tracking_token  # the URL in the ICS portal stays
    assert mode(run.senders_file) == 0o600


def test_set_without_changes_is_refused(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert "nothing to change" in run.fails("senders", "set", "a")


def test_set_refuses_invalid_values(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert "dlt_entity_id" in run.fails("senders", "set", "a", "--dlt-entity-id", "123")
    assert "rate_per_s" in run.fails("senders", "set", "a", "--rate-per-s", "-1")


def test_set_of_an_unknown_sender_is_refused(run: Cli) -> None:
    assert "no sender named 'zz'" in run.fails("senders", "set", "zz", "--rate-per-s", "1")


# -- broken configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("senders", "list"), ("senders", "show", "a"), ("senders", "default", "a"),
             ("senders", "remove", "a"), ("senders", "set", "a", "--rate-per-s", "1")],
)
def test_an_invalid_senders_file_is_one_line_naming_the_file(
    run: Cli, args: tuple[str, ...]
) -> None:
    run.senders_file.parent.mkdir(parents=True)
    run.senders_file.write_text("default = 'a'\n[senders.a\n")
    reason = run.fails(*args)
    assert str(run.senders_file) in reason
    assert "not valid TOML" in reason


def test_an_invalid_environment_is_one_line_naming_the_variable(run: Cli) -> None:
    reason = run.fails("senders", "list", ICS_SMS_PREFETCH="0")
    assert reason.startswith("invalid configuration: ICS_SMS_PREFETCH: ")


# -- secrets --------------------------------------------------------------------------------


def test_the_token_never_appears_in_any_output(run: Cli, tmp_path: Path) -> None:
    run.add("a", "--token", "-", input=TOKEN)
    run.add("b", "--token-env", "T")
    for args in (("senders", "list"), ("senders", "show", "a"), ("senders", "show", "b"),
                 ("senders", "set", "a", "--rate-per-s", "3"), ("senders", "default", "b"),
                 ("senders", "show", "zz"), ("senders", "set", "a", "--rate-per-s", "-3"),
                 ("senders", "remove", "a"), ("senders", "--help")):
        run(*args)
    run("senders", "add", "c", "--type", "promotional", "--sender-id", "ACMEIN",
        "--username", "u", "--token", "-", input=TOKEN)
    run("senders", "add", "d", "--type", "service_implicit", "--sender-id", "ACMEIN",
        "--username", "u", "--token", TOKEN)
    assert len(run.outputs) == 13
    for output in run.outputs:
        assert TOKEN not in output
        assert TOKEN[:12] not in output


def _all_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*path, name))
        else:
            yield (*path, name)


def test_help_of_every_command_holds_no_secret(run: Cli) -> None:
    run.add("a", "--token", "-", input=TOKEN)
    secrets = {
        "ICS_SMS_BROKER_URL": "amqp://app:broker-PASSWORD-x1@rabbit:5672/",
        "ICS_SMS_CALLBACK_SECRET": "callback-SECRET-x2-of-at-least-32-bytes",
        "ICS_SMS_CALLBACK_SECRET_PREVIOUS": "callback-SECRET-x3-of-at-least-32-bytes",
    }
    commands = list(_all_commands(cli))
    assert ("senders", "add") in commands and ("topology",) in commands
    for command in commands:
        result = run(*command, "--help", **secrets)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage:" in result.output
        for value in [TOKEN, "broker-PASSWORD-x1", *secrets.values()]:
            assert value not in result.output, command


# -- set: every field ------------------------------------------------------------------------


def test_set_changes_every_field_and_keeps_the_tracking_url(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    before = load_senders(run.senders_file).named("a")
    out = run.ok("senders", "set", "a", "--type", "promotional", "--sender-id", "712345",
                 "--username", "other", "--dlt-entity-id", PEID, "--rate-per-s", "5",
                 "--click-tracking", "ics", "--resend-uncertain", "--token-stdin",
                 input=TOKEN + "\n")
    after = load_senders(run.senders_file).named("a")
    assert (after.type.value, after.sender_id, after.username, after.dlt_entity_id,
            after.rate_per_s, after.click_tracking.value, after.resend_uncertain) == (
        "promotional", "712345", "other", PEID, 5.0, "ics", True)
    assert after.token_source is TokenSource.INLINE and after.token_env is None
    assert after.resolve_token().get_secret_value() == TOKEN
    assert after.tracking_token == before.tracking_token
    assert "token=****" + TOKEN[-2:] in out and TOKEN not in out
    assert "promotional lane" in out
    assert mode(run.senders_file) == 0o600


def test_set_swaps_an_inline_token_for_a_reference(run: Cli) -> None:
    run.add("a", "--token-stdin", input=TOKEN)
    run.ok("senders", "set", "a", "--token-env", "ACME_TOKEN")
    after = load_senders(run.senders_file).named("a")
    assert (after.token, after.token_env) == (None, "ACME_TOKEN")
    assert mode(run.senders_file) == 0o644
    assert TOKEN not in run.senders_file.read_text()


def test_set_refuses_a_type_the_sender_id_does_not_fit(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert run.fails("senders", "set", "a", "--type", "promotional") == (
        "sender 'a': sender_id: 'ACMEIN': a promotional header is exactly 6 digits (DLT)")
    assert load_senders(run.senders_file).named("a").type.value == "service_implicit"


def test_set_stores_a_lower_case_header_upper_case(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.ok("senders", "set", "a", "--sender-id", "acmebk")
    assert load_senders(run.senders_file).named("a").sender_id == "ACMEBK"


def test_set_can_remove_the_dlt_entity_id(run: Cli) -> None:
    run.add("a", "--token-env", "T", "--dlt-entity-id", PEID)
    run.ok("senders", "set", "a", "--no-dlt-entity-id")
    assert load_senders(run.senders_file).named("a").dlt_entity_id is None


def test_set_refuses_a_token_value_on_the_command_line(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert "standard input" in run.fails("senders", "set", "a", "--token", TOKEN)


# -- disable / enable / retired ---------------------------------------------------------------


def test_disable_and_enable_show_in_list_and_show(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert "disabled sender a" in run.ok("senders", "disable", "a", "--reason", "unpaid bill")
    assert "DISABLED: unpaid bill" in run.ok("senders", "list")
    assert "state            DISABLED: unpaid bill" in run.ok("senders", "show", "a")
    assert load_senders(run.senders_file).named("a").disabled == "unpaid bill"
    assert "enabled sender a" in run.ok("senders", "enable", "a")
    assert load_senders(run.senders_file).named("a").disabled is None
    assert "is not disabled" in run.ok("senders", "enable", "a")


def test_disable_needs_a_reason(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    assert run("senders", "disable", "a").exit_code == 2


def test_a_removed_sender_is_listed_while_its_receipts_are_accepted(run: Cli) -> None:
    run.add("a", "--token-env", "T")
    run.add("b", "--token-env", "T")
    token = load_senders(run.senders_file).named("b").tracking_token
    assert "its tracking URL accepts receipts until" in run.ok("senders", "remove", "b")
    [gone] = load_senders(run.senders_file).retired
    assert (gone.name, gone.tracking_token) == ("b", token)
    listed = run.ok("senders", "list")
    assert "removed (their tracking URLs still accept receipts):" in listed
    assert "  b " in listed
    shown = run.ok("senders", "show", "b")
    assert f"{PUBLIC_URL}/ics/{token}/receipts" in shown and "accepted until" in shown
    after_grace = run("senders", "list", ICS_SMS_SENDERS_GRACE_S="0")
    assert "removed" not in after_grace.stdout


# -- import / export / history ---------------------------------------------------------------


def test_export_then_import_round_trips_without_inline_secrets(run: Cli, tmp_path: Path) -> None:
    run.add("a", "--token-env", "T", "--dlt-entity-id", PEID)
    run.add("b", "--token-stdin", input=TOKEN)
    result = run("senders", "export")
    assert result.exit_code == 0
    assert TOKEN not in result.output
    assert "inline token of b is left out" in result.stderr
    assert 'token_env = "T"' in result.stdout
    exported = tmp_path / "out.toml"
    run.ok("senders", "export", str(exported))
    assert TOKEN not in exported.read_text()


def test_export_with_secrets_writes_an_owner_only_file(run: Cli, tmp_path: Path) -> None:
    run.add("b", "--token-stdin", input=TOKEN)
    target = tmp_path / "backup.toml"
    out = run.ok("senders", "export", str(target), "--include-secrets")
    assert TOKEN not in out
    assert mode(target) == 0o600
    assert load_senders(target).named("b").resolve_token().get_secret_value() == TOKEN
    assert "never to standard output" in run.fails("senders", "export", "--include-secrets")


def test_import_keeps_tracking_urls_and_retires_missing_senders(run: Cli, tmp_path: Path) -> None:
    run.add("a", "--token-env", "T")
    run.add("b", "--token-env", "T")
    before = load_senders(run.senders_file)
    given = tmp_path / "new.toml"
    given.write_text('default = "a"\n[senders.a]\ntype = "promotional"\nsender_id = "712345"\n'
                     'username = "acme"\ntoken_env = "T"\n\n[senders.c]\n'
                     'type = "transactional"\nsender_id = "ACMEBK"\nusername = "acme"\n'
                     'token_env = "T"\ndisabled = "not yet"\n')
    out = run.ok("senders", "import", str(given))
    assert "added c; changed a; removed b" in out
    after = load_senders(run.senders_file)
    assert after.named("a").tracking_token == before.named("a").tracking_token
    assert after.named("c").disabled == "not yet"
    assert [r.tracking_token for r in after.retired] == [before.named("b").tracking_token]


def test_import_of_an_invalid_file_changes_nothing(run: Cli, tmp_path: Path) -> None:
    run.add("a", "--token-env", "T")
    given = tmp_path / "new.toml"
    given.write_text('default = "a"\n[senders.a]\ntype = "promotional"\nsender_id = "ACMEIN"\n'
                     'username = "acme"\ntoken_env = "T"\n')
    reason = run.fails("senders", "import", str(given))
    assert reason == (f"{given}: senders.a: sender_id: 'ACMEIN': a promotional header is "
                      "exactly 6 digits (DLT)")
    assert load_senders(run.senders_file).named("a").type.value == "service_implicit"
    assert "no such file" in run.fails("senders", "import", str(tmp_path / "nope.toml"))


def test_history_of_the_file_source_says_it_keeps_none(run: Cli) -> None:
    out = run.ok("senders", "history")
    assert f"no change history in senders file {run.senders_file}" in out


def test_a_registry_that_refuses_the_connection_is_one_line_without_its_password(
        run: Cli) -> None:
    reason = run.fails("senders", "list",
                       ICS_SMS_SENDERS_URL="postgresql://u:db-PASSWORD@127.0.0.1/x")
    assert reason.startswith("senders registry postgresql://u:***@127.0.0.1/x")
    assert "cannot connect" in reason and "db-PASSWORD" not in reason
    assert "\n" not in reason.strip()


# -- test: as careful as a campaign ----------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    """A sandbox ICS on its own loop (the command runs its own); receipts never fire."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = SandboxConfig(receipt_delay_ms=3_600_000)
    running = asyncio.run_coroutine_threadsafe(start_sandbox(config), loop).result(10)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def sent(sandbox: RunningSandbox) -> int:
    with urllib.request.urlopen(f"{sandbox.url}/_stats", timeout=5) as answer:
        stats = json.loads(answer.read())
    return int(stats["requests"])


@pytest.fixture
def ics(run: Cli, sandbox: RunningSandbox) -> RunningSandbox:
    run.env["ICS_SMS_ICS_URL"] = sandbox.url
    run.env["ICS_SMS_REDIS_URL"] = "memory://"
    run.env["T"] = TOKEN
    run.add("otp", "--token-env", "T", "--dlt-entity-id", PEID)
    return sandbox


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (("--text", ""), "--text: must not be empty or only white space"),
        (("--text", "   "), "--text: must not be empty or only white space"),
        (("--text", "x" * 5000), "--text: String should have at most 2000 characters"),
        (("--text", "hi", "--to", "12"), "--to: "),
        (("--text", "hi"), "--dlt-template-id: required for +91 numbers"),
        (("--text", "hi", "--dlt-template-id", "12ab"), "--dlt-template-id: String should"),
    ],
)
def test_test_refuses_what_a_send_request_refuses(
    run: Cli, ics: RunningSandbox, options: tuple[str, ...], reason: str
) -> None:
    args = ("--to", "+919000000001", *options) if "--to" not in options else options
    message = run.fails("senders", "test", "otp", *args, T=TOKEN)
    assert message.startswith(reason), message
    assert sent(ics) == 0


def test_test_shows_the_segments_and_refuses_long_texts_without_yes(
    run: Cli, ics: RunningSandbox
) -> None:
    text = "word " * 200  # 1000 GSM-7 characters: 7 segments
    result = run("senders", "test", "otp", "--to", "+14155550123", "--text", text, T=TOKEN)
    assert result.exit_code == 1
    assert "text: 1000 characters, gsm7, 7 segment(s)" in result.stdout
    assert "--text is 7 segments (each billed as one SMS), more than 3: pass --yes" in (
        result.stderr)
    assert sent(ics) == 0
    out = run.ok("senders", "test", "otp", "--to", "+14155550123", "--text", text, "--yes")
    assert "accepted by ICS: mid=" in out and "segments=7 encoding=gsm7" in out
    assert sent(ics) == 1


def test_test_respects_the_promotional_window(run: Cli, ics: RunningSandbox) -> None:
    run.ok("senders", "add", "promo", "--type", "promotional", "--sender-id", "712345",
           "--username", "acme", "--token-env", "T", "--dlt-entity-id", PEID)
    now = datetime.now(UTC)
    closed = {"ICS_SMS_PROMO_TIMEZONE": "UTC",
              "ICS_SMS_PROMO_WINDOW_START": f"{now + timedelta(hours=1):%H:%M}",
              "ICS_SMS_PROMO_WINDOW_END": f"{now + timedelta(hours=2):%H:%M}"}
    args = ("senders", "test", "promo", "--to", "+14155550123", "--text", "Sale")
    reason = run.fails(*args, T=TOKEN, **closed)
    assert "the promotional window" in reason and "pass --outside-window" in reason
    assert sent(ics) == 0
    result = run(*args, "--outside-window", T=TOKEN, **closed)
    assert result.exit_code == 0, result.output
    assert "outside the promotional window" in result.stderr
    assert sent(ics) == 1


def test_test_events_have_the_keys_of_a_workers_events(
    run: Cli, ics: RunningSandbox, redis_url: str
) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}."
    result = run("senders", "test", "otp", "--to", "+919000000001", "--text", "Hi",
                 "--dlt-template-id", "1207", "--json", T=TOKEN, ICS_SMS_REDIS_URL=redis_url,
                 ICS_SMS_NAMESPACE=namespace)
    assert result.exit_code == 0, result.output
    event = ReceiptEvent.model_validate_json(result.stdout)
    assert (event.status, event.campaign_id, event.sender, event.segments) == (
        Status.SUBMITTED, TEST_CAMPAIGN_ID, "otp", 1)
    request = SendRequest(message_id="m", campaign_id="c", to="+919000000001", text="Hi")
    worker = Outcomes(Topology()).event(request, Status.SUBMITTED, datetime.now(UTC),
                                        sender="otp", attempt=1, provider_message_id="x",
                                        segments=1, encoding=Encoding.GSM7)
    assert json.loads(result.stdout).keys() == json.loads(worker.body).keys()
    settings = Settings(redis_url=redis_url, namespace=namespace)

    async def stored() -> dict[str, Any]:
        store = open_context_store(settings)
        try:
            return await store.get_many([event.message_id])
        finally:
            await store.close()

    context = asyncio.run(stored())[event.message_id]
    assert (context.campaign_id, context.sender, context.segments) == (
        TEST_CAMPAIGN_ID, "otp", 1)


def test_test_reports_an_ics_refusal_in_one_line(run: Cli, ics: RunningSandbox) -> None:
    reason = run.fails("senders", "test", "otp", "--to", "+919000000400", "--text", "Hi",
                       "--dlt-template-id", "1207", T=TOKEN)
    assert reason.startswith("ICS refused the message: ")


def test_the_token_never_appears_in_the_output_of_the_new_commands(
    run: Cli, ics: RunningSandbox, tmp_path: Path
) -> None:
    run.add("inline", "--token-stdin", input=TOKEN)
    run.ok("senders", "set", "inline", "--token-stdin", "--rate-per-s", "9", input=TOKEN)
    run.ok("senders", "disable", "inline", "--reason", "test")
    run.ok("senders", "enable", "inline")
    run("senders", "export")
    run.ok("senders", "export", str(tmp_path / "x.toml"), "--include-secrets")
    run.ok("senders", "import", str(tmp_path / "x.toml"))
    run.ok("senders", "history")
    run.ok("senders", "show", "inline")
    run.ok("senders", "list")
    run("senders", "test", "inline", "--to", "+14155550123", "--text", "Hi", "--json")
    run("senders", "test", "inline", "--to", "+919000000500", "--text", "Hi",
        "--dlt-template-id", "1")
    for output in run.outputs:
        assert TOKEN not in output
        assert TOKEN[:12] not in output


def test_a_change_made_meanwhile_is_not_overwritten(
    run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command saves against the version it read: a concurrent change wins, and the
    operator is told to run the command again."""
    run.add("a", "--token-env", "T")
    real = senders_cmd.open_senders

    def read_then_changed(settings: Settings) -> Any:
        source, snapshot = real(settings)
        source.save(snapshot.senders.disable("a", "by someone else"), expected=None,
                    actor="other@host", action="senders disable a")
        return source, snapshot

    monkeypatch.setattr(senders_cmd, "open_senders", read_then_changed)
    reason = run.fails("senders", "set", "a", "--rate-per-s", "3")
    assert reason == f"{run.senders_file} changed since it was read; run the command again"
    after = load_senders(run.senders_file).named("a")
    assert (after.rate_per_s, after.disabled) == (100.0, "by someone else")
