"""A broken ``ICS_SMS_*`` environment: help still works, every command says why in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from ics_sms.cli.main import cli

pytestmark = pytest.mark.usefixtures("isolated_logging")

BROKEN = {
    "ICS_SMS_PREFETCH": "abc",
    "ICS_SMS_BROKER_URL": "rabbitmq://app:broker-pw@foo",
    "ICS_SMS_NAMESPACE": "down",
    "ICS_SMS_CALLBACK_SECRET": "x",
    "ICS_SMS_LOG_FORMAT": "nonsense",
}


def _all_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*path, name))


COMMANDS = [(), *_all_commands(cli)]


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_error(result: Result) -> str:
    """The reason: an ``Error:`` line, or a services' JSON log line when logs are JSON."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if lines[0].startswith("{"):
        record = json.loads(lines[0])
        assert record["event"] == "cannot run", record
        return str(record["reason"])
    assert lines[0].startswith("Error: ")
    return lines[0].removeprefix("Error: ")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_needs_no_valid_environment(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help", **BROKEN)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_version_needs_no_valid_environment() -> None:
    result = invoke("--version", **BROKEN)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ics-sms, version ")


@pytest.mark.parametrize(
    "args",
    [("worker",), ("receiver",), ("topology",), ("events",), ("senders", "list"),
     ("publish", "--campaign-id", "c", "--text", "hi", "campaign.csv")],
    ids=" ".join,
)
def test_an_unsupported_broker_url_is_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "campaign.csv").write_text("to\n+919000000001\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = invoke(*args, ICS_SMS_BROKER_URL="rabbitmq://app:broker-pw@foo",
                        ICS_SMS_CALLBACK_SECRET="c" * 32)
    reason = one_line_error(result)
    assert reason.startswith("invalid configuration: ICS_SMS_BROKER_URL: scheme rabbitmq:// "
                             "is not supported"), reason
    assert "broker-pw" not in result.output


@pytest.mark.parametrize(("log_format", "json_line"), [("json", True), ("console", False)])
def test_a_broken_environment_still_logs_as_asked(log_format: str, json_line: bool) -> None:
    result = invoke("worker", ICS_SMS_BROKER_URL="rabbitmq://foo",
                    ICS_SMS_LOG_FORMAT=log_format)
    assert "ICS_SMS_BROKER_URL: scheme rabbitmq://" in one_line_error(result)
    assert result.stderr.startswith("{") is json_line


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("ICS_SMS_NAMESPACE", "down", "ICS_SMS_NAMESPACE: namespace 'down' must end with"),
        ("ICS_SMS_CALLBACK_SECRET", "x", "ICS_SMS_CALLBACK_SECRET: is 1 bytes, at least 32"),
    ],
)
def test_a_refused_value_is_one_line_naming_the_variable(
    variable: str, value: str, fragment: str
) -> None:
    reason = one_line_error(invoke("topology", "--print", **{variable: value}))
    assert fragment in reason, reason


def test_a_broken_environment_prints_no_traceback_from_the_real_command() -> None:
    # In process, click's runner would hide what Python prints on an uncaught exception.
    result = subprocess.run(
        [sys.executable, "-m", "ics_sms", "topology"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "ICS_SMS_BROKER_URL": "rabbitmq://foo"}, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: invalid configuration: ICS_SMS_BROKER_URL: scheme rabbitmq:// is not supported: "
        "use amqp:// or amqps:// (RabbitMQ) or memory:// (the embedded broker)"
    ]


def test_the_worker_names_a_lane_it_cannot_consume() -> None:
    reason = one_line_error(invoke("worker", ICS_SMS_WORKER_LANES="bulk"))
    assert reason.startswith("invalid configuration: ICS_SMS_WORKER_LANES: "), reason
    assert "'service', 'promotional' or 'all'" in reason, reason
    result = invoke("worker", "--lanes", "bulk")
    assert result.exit_code == 2 and "'bulk' is not one of" in result.output, result.output
