"""Command-line tests invoke the CLI in process: undo the logging it configures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from ics_sms.broker import amqp, connect


@pytest.fixture
def isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every invocation configures structlog on the runner's stderr: undo that afterwards."""
    for module in (connect, amqp):
        monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
    pika_level = logging.getLogger("pika").level
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    logging.getLogger("pika").setLevel(pika_level)
    logging.captureWarnings(False)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
