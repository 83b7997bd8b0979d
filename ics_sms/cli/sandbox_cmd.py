"""``ics-sms sandbox``: run the local ICS stand-in (see :mod:`ics_sms.sandbox`)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click
import structlog
from pydantic import SecretStr, ValidationError

from ics_sms.cli.common import CliError, field_errors, load_settings, read_senders
from ics_sms.logs import configure_logging
from ics_sms.sandbox import SandboxConfig, start_sandbox
from ics_sms.schemas.senders import SenderError, Senders

__all__ = ["collect_accounts", "sandbox_command"]

log = structlog.get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_CONFIG_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("seed", int, "Seed of every random choice (reproducible runs)."),
    ("delivery_ratio", float, "Share of ordinary numbers delivered; the rest fail."),
    ("click_ratio", float, "Share of delivered links clicked (urlshortening 1 only)."),
    ("duplicate_receipt_ratio", float, "Share of receipts posted twice."),
    ("receipt_delay_ms", float, "Delay from acceptance to the receipt."),
    ("receipt_jitter_ms", float, "Random extra receipt delay, up to this."),
    ("click_delay_ms", float, "Delay from the delivery to the click."),
    ("receipt_batch_size", int, "Most receipts in one POST."),
    ("receipt_flush_ms", float, "Time receipts gather between two rounds of POSTs."),
    ("receipt_concurrency", int, "Receipt POSTs in flight at once."),
    ("receipt_max_attempts", int, "POSTs of one receipt before giving it up."),
    ("receipt_retry_base_ms", float, "First retry delay of a failed receipt POST."),
    ("receipt_retry_cap_ms", float, "Longest retry delay of a failed receipt POST."),
    ("default_dlr_url", str, "Receipt URL for requests without dlrurl (the portal URL)."),
    ("latency_ms", float, "Extra latency of every datasend answer."),
    ("error_rate", float, "Share of datasend requests answered 500."),
    ("throttle_per_s", float, "Records per second per user beyond which the answer is 429."),
    ("outage_at_s", float, "Start of an outage (503s), seconds after start-up."),
    ("outage_s", float, "Length of that outage; 0 means none."),
)


def _config_options(func: F) -> F:
    """One ``--kebab-case`` option per tunable SandboxConfig field, default from the model."""
    for name, kind, text in reversed(_CONFIG_OPTIONS):
        default = SandboxConfig.model_fields[name].default
        func = click.option(
            "--" + name.replace("_", "-"), name, type=kind, default=default, help=text,
            show_default=default is not None,
        )(func)
    return func


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9090, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--account", "accounts", multiple=True, metavar="USER:TOKEN",
              help="An ICS account the sandbox accepts (repeatable).")
@click.option("--senders/--no-senders", "use_senders", default=True, show_default=True,
              help="Also accept the accounts of the senders file (ICS_SMS_SENDERS_FILE).")
@_config_options
def sandbox_command(host: str, port: int, accounts: tuple[str, ...], use_senders: bool,
                    **tunables: Any) -> None:
    """Run a local ICS stand-in that answers /datasend and posts receipts back.

    Test numbers with fixed outcomes (919000000001 delivered, 9190000009NN failed with
    code 9NN, 919000000400 refused, 919000000500 answered 500...) are listed in the README.
    With no account at all, any credentials are accepted.
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    senders = read_senders(settings) if use_senders else None
    config = _build_config(collect_accounts(accounts, senders), tunables)
    if not config.accounts:
        log.warning("sandbox.open", detail="no accounts configured: any credentials pass")
    asyncio.run(_serve(config, host, port))


def collect_accounts(
    options: Iterable[str], senders: Senders | None, environ: Mapping[str, str] | None = None
) -> dict[str, SecretStr]:
    """Accounts from ``--account USER:TOKEN`` options and from the senders' users/tokens."""
    accounts: dict[str, SecretStr] = {}
    for option in options:
        user, colon, secret = option.partition(":")
        if not colon or not user or not secret:
            raise CliError("--account takes USER:TOKEN")
        _add_account(accounts, user, SecretStr(secret), "--account")
    for sender in senders or ():
        try:
            token = sender.resolve_token(environ)
        except SenderError as exc:
            log.warning("sandbox.sender_skipped", sender=sender.name, reason=str(exc))
            continue
        _add_account(accounts, sender.username, token, f"sender {sender.name!r}")
    return accounts


def _add_account(accounts: dict[str, SecretStr], user: str, token: SecretStr,
                 source: str) -> None:
    known = accounts.get(user)
    if known is not None and known.get_secret_value() != token.get_secret_value():
        raise CliError(f"{source}: user {user!r} already has a different token")
    accounts[user] = token


def _build_config(accounts: dict[str, SecretStr], tunables: Mapping[str, Any]) -> SandboxConfig:
    try:
        return SandboxConfig(accounts=accounts, **tunables)
    except ValidationError as exc:
        raise CliError("invalid option "
                       + field_errors(exc, lambda field: f"--{field.replace('_', '-')}")) from None


async def _serve(config: SandboxConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly."""
    try:
        sandbox = await start_sandbox(config, host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("sandbox.started", url=sandbox.url, accounts=sorted(config.accounts),
             **config.model_dump(exclude={"accounts"}))
    click.echo(f"ICS sandbox listening on {sandbox.url}")
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sandbox.close()
        log.info("sandbox.stopped", **sandbox.stats())
