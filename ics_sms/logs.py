"""Logging: structlog events to stderr, JSON lines in a pipe, readable on a terminal.

Our structlog events and the standard-library records of the libraries (aiohttp, asyncio,
pika, kombu ...) end in the same processors: one format per process, so in JSON mode every
line on stderr is one JSON object, tracebacks included (as the ``exception`` field). Every
value is redacted on the way out (:mod:`ics_sms.schemas.redact`): tracking tokens, bearer
tokens, URL passwords and the secrets the process knows never reach a line, whoever wrote it.
"""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ics_sms.schemas.redact import SECRETS

__all__ = ["configure_logging", "redact_event", "renders_json"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

_PLAIN = (int, float, bool, type(None), datetime.date, datetime.time, datetime.timedelta)
"""Values that cannot hold a secret: rendered as they are."""


def _dumps(obj: object, **_kw: object) -> str:
    return orjson.dumps(obj, default=str).decode()


class _StderrLoggerFactory:
    """Writes to whatever ``sys.stderr`` is at the time of the log call."""

    def __call__(self, *_args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(file=sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: like the structlog side, writes to the current ``sys.stderr``."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return SECRETS(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return SECRETS(str(value))  # an exception, a URL object ...: its text, redacted


def redact_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Processor: every rendered value without secrets (after tracebacks are formatted)."""
    return {key: value if key.startswith("_") or key == "exc_info" else _redacted(value)
            for key, value in event_dict.items()}


def _redact_console_exception(_logger: WrappedLogger, _name: str,
                              event_dict: EventDict) -> EventDict:
    """Console mode renders ``exc_info`` itself: hand it the text, already redacted."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        formatted = structlog.processors.format_exc_info(_logger, _name,
                                                         {"exc_info": exc_info})
        if "exception" in formatted:
            event_dict["exception"] = SECRETS(formatted["exception"])
    return event_dict


def configure_logging(level: str = "info",
                      fmt: Literal["auto", "json", "console"] = "auto", *,
                      secrets: Iterable[str] = ()) -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``secrets`` are added to what every line is redacted of (see
    :data:`ics_sms.schemas.redact.SECRETS`).
    """
    SECRETS.add(*secrets)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps) if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # tracebacks without local variables: they would show tokens and request paths
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    numeric = _LEVELS.get(level, logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Processor] = [
        structlog.processors.format_exc_info if as_json else _redact_console_exception,
        redact_event,
    ]
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *tail, renderer],
        ),
        level=max(numeric, logging.WARNING),
    )
    logging.getLogger("pika").setLevel(logging.CRITICAL if numeric > logging.DEBUG
                                       else logging.WARNING)


def renders_json() -> bool:
    """Whether log lines are JSON now (as :func:`configure_logging` chose)."""
    processors = structlog.get_config()["processors"]
    return bool(processors) and isinstance(processors[-1], structlog.processors.JSONRenderer)


def _route_stdlib(formatter: logging.Formatter, level: int) -> None:
    """One root handler with ``formatter`` (replacing ours from an earlier call)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn() at run time: a log line like any other
