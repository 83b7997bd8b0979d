"""Logging: structlog events to stderr, JSON lines in a pipe, readable on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _dumps(obj: object, **_kw: object) -> str:
    return orjson.dumps(obj, default=str).decode()


class _StderrLoggerFactory:
    """Writes to whatever ``sys.stderr`` is at the time of the log call."""

    def __call__(self, *_args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str = "info",
                      fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog (and stdlib logging of the libraries) once per process."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps) if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # tracebacks without local variables: they would show tokens and request paths
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    numeric = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL if numeric > logging.DEBUG
                                       else logging.WARNING)
