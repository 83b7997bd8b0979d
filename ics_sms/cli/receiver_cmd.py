"""``ics-sms receiver``: the HTTP endpoint ICS posts delivery and click receipts to."""

from __future__ import annotations

import asyncio

import click

from ics_sms.callbacks.serve import StartupError, run_receiver
from ics_sms.cli.common import CliError, load_settings, read_senders

__all__ = ["receiver_command"]


@click.command("receiver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
def receiver_command(host: str, port: int) -> None:
    """Receive ICS receipts on each sender's tracking URL and publish them as events.

    Runs until SIGTERM or SIGINT; /healthz and /readyz serve probes.
    """
    settings = load_settings()
    if not settings.callback_secret.get_secret_value():
        raise CliError("ICS_SMS_CALLBACK_SECRET is not set: the receiver cannot verify smsgids")
    senders = read_senders(settings)
    try:
        asyncio.run(run_receiver(settings, senders, host=host, port=port))
    except StartupError as exc:
        raise CliError(str(exc)) from None


if __name__ == "__main__":  # ``python -m ics_sms.cli.receiver_cmd`` until main.py lists it
    from ics_sms.logs import configure_logging

    try:
        _settings = load_settings()
    except CliError as _exc:
        _exc.show()
        raise SystemExit(_exc.exit_code) from None
    configure_logging(_settings.log_level, _settings.log_format)
    receiver_command(prog_name="ics-sms receiver")
