"""What every command shares: settings from the environment and one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import structlog
from pydantic import ValidationError

from ics_sms.logs import renders_json
from ics_sms.schemas.errors import describe
from ics_sms.schemas.redact import SECRETS, known_secrets
from ics_sms.schemas.senders import SenderError, Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.senders import SenderSource, Snapshot, open_sender_source
from ics_sms.workers.dead_letters import parse_age

__all__ = ["SERVICES", "CliError", "ErrorHandlingGroup", "age_option", "field_errors",
           "load_settings",
           "open_senders", "read_senders"]


SERVICES = frozenset({"worker", "receiver"})
"""Long-running commands: their stderr is a log stream, so in JSON mode their one-line
reason is a JSON log line too."""


class CliError(click.ClickException):
    """A command could not do its job; the message is one line saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        ctx = click.get_current_context(silent=True)
        self.command = ctx.info_name if ctx is not None else None

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        if file is None and self.command in SERVICES and renders_json():
            structlog.get_logger("ics_sms.cli").error("cannot run", command=self.command,
                                                      reason=self.format_message())
        else:
            super().show(file)


class ErrorHandlingGroup(click.Group):
    """Turns domain errors into a one-line reason and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SenderError as exc:
            raise CliError(str(exc)) from None
        except ValidationError as exc:
            raise CliError("; ".join(describe(exc))) from None


def age_option(option: str, value: str | None) -> float | None:
    """An age option (``90s``, ``30m``, ``2h``, ``7d``) in seconds; a one-line error naming
    the option when it is not one."""
    if value is None:
        return None
    try:
        return parse_age(value)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``ICS_SMS_*``; ``overrides`` (command-line options) win when not None."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise CliError("invalid configuration: "
                       + field_errors(exc, lambda field: f"ICS_SMS_{field.upper()}")) from None


def field_errors(exc: ValidationError, name: Callable[[str], str]) -> str:
    """``exc`` as ``NAME: reason; ...``, each field named the way the user set it
    (``name`` maps a model field to its variable or option)."""
    lines = []
    for line in describe(exc):
        field, _, reason = line.partition(": ")
        lines.append(f"{name(field)}: {reason}")
    return "; ".join(lines)


def open_senders(settings: Settings) -> tuple[SenderSource, Snapshot]:
    """The senders source of the settings (the file, or the registry) and what it holds
    now; from now on their tokens and the settings' secrets are redacted from every log
    line of this process. The caller closes the source."""
    try:
        source = open_sender_source(settings)
    except SenderError as exc:
        raise CliError(str(exc)) from None
    try:
        snapshot = source.load()
    except SenderError as exc:
        source.close()
        raise CliError(str(exc)) from None
    except BaseException:
        source.close()
        raise
    SECRETS.add(*known_secrets(settings, snapshot.senders))
    return source, snapshot


def read_senders(settings: Settings) -> Senders:
    """The senders of the settings' source (see :func:`open_senders`)."""
    source, snapshot = open_senders(settings)
    source.close()
    return snapshot.senders
