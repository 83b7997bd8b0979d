"""``ics-sms receiver``: the HTTP endpoint ICS posts delivery and click receipts to.

The senders come from their source (the senders file, or the registry: see
:func:`~ics_sms.stores.senders.open_sender_source`) and stay current while the receiver
runs (:class:`~ics_sms.stores.live.LiveSenders`): a source that cannot be read at start
stops the command with the reason; later failures keep the last good configuration.
"""

from __future__ import annotations

import asyncio

import click

from ics_sms.callbacks.serve import StartupError, run_receiver
from ics_sms.cli.common import CliError, load_settings
from ics_sms.cli.metrics_http import metrics_listener
from ics_sms.schemas.settings import Settings
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.senders import SenderSourceError, open_sender_source

__all__ = ["receiver_command"]


async def _serve(settings: Settings, senders: LiveSenders, host: str, port: int) -> None:
    """The receiver on ``host:port``, its metrics on a listener of their own, the senders
    reloaded for as long as it runs."""
    stop = asyncio.Event()
    reloading = asyncio.create_task(senders.run(stop), name="senders reload")
    try:
        async with metrics_listener(settings.metrics_host, settings.receiver_metrics_port):
            await run_receiver(settings, senders, host=host, port=port)
    finally:
        stop.set()
        await reloading


@click.command("receiver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
def receiver_command(host: str, port: int) -> None:
    """Receive ICS receipts on each sender's tracking URL and publish them as events.

    Runs until SIGTERM or SIGINT; senders added, changed or removed meanwhile are seen
    within ICS_SMS_SENDERS_RELOAD_S. /healthz and /readyz serve probes. Prometheus metrics
    are on ICS_SMS_METRICS_HOST:ICS_SMS_RECEIVER_METRICS_PORT (127.0.0.1:9101), never on
    the port ICS reaches.
    """
    settings = load_settings()
    if not settings.callback_secret.get_secret_value():
        raise CliError("ICS_SMS_CALLBACK_SECRET is not set: the receiver cannot verify smsgids")
    try:
        source = open_sender_source(settings)
    except SenderSourceError as exc:
        raise CliError(str(exc)) from None
    try:
        senders = LiveSenders.open(source, settings, check_tokens=False)
        asyncio.run(_serve(settings, senders, host, port))
    except (SenderSourceError, StartupError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {settings.metrics_host}:"
                       f"{settings.receiver_metrics_port}: {exc.strerror}") from None
    finally:
        source.close()


if __name__ == "__main__":  # ``python -m ics_sms.cli.receiver_cmd`` until main.py lists it
    from ics_sms.logs import configure_logging

    try:
        _settings = load_settings()
    except CliError as _exc:
        _exc.show()
        raise SystemExit(_exc.exit_code) from None
    configure_logging(_settings.log_level, _settings.log_format)
    receiver_command(prog_name="ics-sms receiver")
