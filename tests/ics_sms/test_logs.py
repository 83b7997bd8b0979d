"""Logging: structlog events on stderr, JSON lines in a pipe, readable on a terminal."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
import structlog

from ics_sms.logs import configure_logging

TRACKING_TOKEN = "Zq3vY8c1XkP0s-Ab_9tLmw"
ICS_TOKEN = "ics-bearer-token-0042"


@pytest.fixture(autouse=True)
def restore_logging(isolated_logging: None) -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()


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


# -- the libraries' own records: the same format, the same redaction ----------------------


def aiohttp_error() -> None:
    """What aiohttp logs for a malformed request line (its path is the tracking URL)."""
    try:
        raise ValueError(f"Bad status line: b'POST /ics/{TRACKING_TOKEN}/rec eipts HTTP/1.1'")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s",
                                                      "127.0.0.1")


def test_stdlib_records_are_json_lines_with_the_traceback_inside(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    aiohttp_error()
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == 2
    first = records[0]
    assert first["event"] == "Error handling request from 127.0.0.1"
    assert (first["logger"], first["level"]) == ("aiohttp.server", "error")
    assert first["timestamp"].endswith("Z")
    assert "Traceback (most recent call last)" in first["exception"]
    assert "ValueError: Bad status line" in first["exception"]
    assert records[1]["logger"] == "asyncio"


def test_stdlib_info_chatter_stays_out_unless_debugging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    logging.getLogger("kombu").info("chatter")
    logging.getLogger("kombu").warning("worth knowing")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["event"] for r in records] == ["worth knowing"]


def test_configuring_twice_leaves_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    configure_logging("info", "json")
    logging.getLogger("aiohttp.access").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_warnings_at_run_time_are_log_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"odd path /ics/{TRACKING_TOKEN}/receipts", UserWarning, stacklevel=1)
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["logger"] == "py.warnings" and "UserWarning" in record["event"]
    assert TRACKING_TOKEN not in line


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_line_shows_a_tracking_token_or_a_known_secret(
    capsys: pytest.CaptureFixture[str], fmt: Literal["json", "console"]
) -> None:
    configure_logging("info", fmt, secrets=[ICS_TOKEN])
    aiohttp_error()
    log = structlog.get_logger("test")
    log.warning("receipts refused", path=f"/ics/{TRACKING_TOKEN}/receipts",
                headers={"Authorization": f"Bearer {ICS_TOKEN}"}, tried=[ICS_TOKEN])
    try:
        raise RuntimeError(f"ICS answered 401: invalid token {ICS_TOKEN}")
    except RuntimeError as exc:
        log.exception("batch failed", error=exc)
    logging.getLogger("pika.adapters").critical("connection to amqp://app:hunter2@rabbit/ lost")
    err = capsys.readouterr().err
    assert "/ics/***/rec eipts" in err  # what happened stays readable
    assert "ICS answered 401: invalid token ***" in err
    for secret in (TRACKING_TOKEN, ICS_TOKEN, "hunter2"):
        assert secret not in err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines()]
        assert records[1]["path"] == "/ics/***/receipts"
        assert records[1]["headers"] == {"Authorization": "Bearer ***"}
        assert records[2]["error"] == "ICS answered 401: invalid token ***"
    else:
        assert "Traceback (most recent call last)" in err
        assert "aiohttp.server" in err


def test_console_mode_shows_stdlib_records_readably(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    aiohttp_error()
    err = capsys.readouterr().err
    assert "Error handling request from 127.0.0.1" in err.splitlines()[0]
    assert "[aiohttp.server]" in err.splitlines()[0]
    assert "Traceback" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_values_that_cannot_hold_a_secret_keep_their_json_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    structlog.get_logger("test").info("window", opens_at=at, count=3, ratio=0.5, ok=True)
    record = json.loads(capsys.readouterr().err)
    assert (record["opens_at"], record["count"], record["ratio"], record["ok"]) == (
        "2026-12-01T09:30:00+00:00", 3, 0.5, True)
