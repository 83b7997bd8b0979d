"""Logging: structlog events on stderr, JSON lines in a pipe, readable on a terminal."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from ics_sms.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    pika_level = logging.getLogger("pika").level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger("pika").setLevel(pika_level)


def emit(capsys: pytest.CaptureFixture[str]) -> list[str]:
    log = structlog.get_logger("test")
    log.info("message submitted", message_id="msg-1", sender="acme-otp", segments=2)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for command output, never for logs
    return captured.err.splitlines()


def test_json_mode_writes_one_json_object_per_line_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    lines = emit(capsys)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "message submitted"
    assert record["message_id"] == "msg-1"
    assert record["sender"] == "acme-otp"
    assert record["segments"] == 2
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_auto_mode_is_json_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "auto")
    (line,) = emit(capsys)
    assert json.loads(line)["event"] == "message submitted"


def test_console_mode_is_readable_and_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    (line,) = emit(capsys)
    assert "message submitted" in line
    assert "message_id=msg-1" in line
    assert "sender=acme-otp" in line
    assert "info" in line
    assert "\x1b[" not in line  # no colour codes when stderr is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warning", "error"]),
        ("info", ["info", "warning", "error"]),
        ("warning", ["warning", "error"]),
        ("error", ["error"]),
    ],
)
def test_the_level_filters_events(
    capsys: pytest.CaptureFixture[str], level: str, shown: list[str]
) -> None:
    configure_logging(level, "json")
    log = structlog.get_logger("test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    levels = [json.loads(line)["level"] for line in capsys.readouterr().err.splitlines()]
    assert levels == shown


def test_bound_context_is_in_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.contextvars.bind_contextvars(campaign_id="diwali")
    log = structlog.get_logger("test").bind(message_id="msg-9")
    log.info("first")
    log.warning("second")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["event"], r["campaign_id"], r["message_id"]) for r in records] == [
        ("first", "diwali", "msg-9"), ("second", "diwali", "msg-9"),
    ]


def test_exceptions_are_one_json_line_with_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("test").exception("worker crashed")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["event"] == "worker crashed"
    assert "RuntimeError: boom" in record["exception"]


def test_values_json_cannot_encode_are_rendered_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    structlog.get_logger("test").info("odd value", path=Path("/etc/ics-sms/senders.toml"))
    record = json.loads(capsys.readouterr().err)
    assert record["path"] == "/etc/ics-sms/senders.toml"


def test_pika_chatter_is_silenced_unless_debugging() -> None:
    configure_logging("info", "json")
    assert logging.getLogger("pika").getEffectiveLevel() > logging.ERROR
    configure_logging("debug", "json")
    assert logging.getLogger("pika").getEffectiveLevel() <= logging.WARNING
