"""Configuration: one typed object read from ``ICS_SMS_*`` variables at start-up and passed in.

Nothing below the command line reads the environment; components take a ``Settings``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ics_sms.schemas.topology import QueueType, Topology, check_namespace

__all__ = [
    "BROKER_SCHEMES",
    "DEFAULT_ICS_URL",
    "MIN_CALLBACK_SECRET_BYTES",
    "LogFormat",
    "LogLevel",
    "LogSettings",
    "Settings",
    "WorkerLanes",
    "broker_passwords",
    "redact_url",
    "split_broker_url",
]

DEFAULT_ICS_URL = "https://api.icsmobile.in"
"""The real ICS host (assumed); point ``ICS_SMS_ICS_URL`` at the sandbox for local work."""

BROKER_SCHEMES = frozenset({"amqp", "amqps", "memory"})
"""RabbitMQ (plain or TLS) and the embedded broker."""

MIN_CALLBACK_SECRET_BYTES = 32
"""The callback secret keys an HMAC: shorter keys are guessable offline from one smsgid."""


_UNSUPPORTED = ("scheme {scheme}:// is not supported: use amqp:// or amqps:// (RabbitMQ) or "
                "memory:// (the embedded broker)")

_NEXT_ADDRESS = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
"""A comma that starts another broker address: the next text is a scheme (a comma inside
a password or a path is not followed by ``scheme://``)."""


def split_broker_url(value: str, *, schemes: Collection[str] = BROKER_SCHEMES,
                     unsupported: str = _UNSUPPORTED) -> tuple[str, ...]:
    """The addresses of a broker setting, in the order given: the one parser of
    ``ICS_SMS_BROKER_URL`` for every client (workers, receiver, producer library).

    Several RabbitMQ nodes are given as full URLs separated by commas
    (``amqp://u:p@h1:5672/,amqp://u:p@h2:5672/``); each keeps its own credentials, vhost
    and options. ``memory://`` (the embedded broker) stands alone. Only ``schemes`` are
    accepted (``unsupported`` is the error for another, formatted with ``scheme``).
    Raises ``ValueError`` saying what is wrong, with every password redacted.
    """
    addresses = tuple(part for part in _NEXT_ADDRESS.split(value.strip()) if part)
    if not addresses:
        raise ValueError("is empty: give amqp://user:password@host:port/ (several RabbitMQ "
                         "nodes: full URLs separated by commas)")
    for url in addresses:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
        except ValueError:
            hint = (" (several nodes: give full URLs separated by commas, "
                    "amqp://u:p@h1:5672/,amqp://u:p@h2:5672/)"
                    if "," in url.partition("://")[2].partition("/")[0] else "")
            raise ValueError(f"not a valid URL: {_redact_or_placeholder(url)}{hint}") from None
        if parts.scheme not in schemes:
            raise ValueError(unsupported.format(scheme=parts.scheme or "(no scheme)"))
        if parts.scheme == "memory" and len(addresses) > 1:
            raise ValueError("memory:// (the embedded broker) cannot be one of several "
                             "addresses: give it alone")
    return addresses


def broker_passwords(value: str) -> list[str]:
    """The password of every address of a broker setting (for the redactor); an address
    that cannot be parsed has none."""
    found = []
    for url in _NEXT_ADDRESS.split(value.strip()):
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found.append(password)
    return found


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and errors; a broker
    setting with several addresses keeps them all, each redacted."""
    addresses = _NEXT_ADDRESS.split(url.strip())
    if len(addresses) > 1:
        return ",".join(redact_url(address) for address in addresses)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
WorkerLanes = Literal["service", "promotional", "all"]


class LogSettings(BaseSettings):
    """Only how to log: what a command can still honour when the rest of the environment
    is invalid (to say so in the format the operator asked for)."""

    model_config = SettingsConfigDict(env_prefix="ICS_SMS_", extra="ignore", frozen=True)

    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"


def _redact_or_placeholder(url: str) -> str:
    """:func:`redact_url`, or a placeholder for text too broken to split into parts."""
    try:
        return redact_url(url)
    except ValueError:
        return "(unparsable URL)"


class Settings(BaseSettings):
    """Everything a component needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="ICS_SMS_", extra="ignore", frozen=True)

    broker_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@localhost:5672/"),
        description="amqp://... for RabbitMQ (several nodes: full URLs separated by commas, "
                    "tried in the order given), memory:// for the embedded broker.",
    )
    namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9._\-]*$", max_length=64)] = Field(
        default="", description="Prefix of every exchange and queue name (isolation)."
    )
    queue_type: QueueType = QueueType.QUORUM
    senders_file: Path = Path("senders.toml")
    senders_url: SecretStr | None = Field(
        default=None,
        description="postgresql://... of the shared senders registry; unset: the senders file.",
    )
    senders_key: SecretStr | None = Field(
        default=None,
        description="Key(s) encrypting ICS tokens in the registry, newest first, comma-separated "
                    "(older keys still decrypt while a rotation runs).",
    )
    senders_reload_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="How often running services look for changed senders (at most; the "
                    "registry notifies them at once).",
    )
    senders_grace_s: float = Field(
        default=7 * 24 * 3600, ge=0,
        description="How long a removed sender's tracking URL still accepts receipts.",
    )
    public_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"),
        description="Base URL where ICS reaches the receiver.",
    )
    callback_secret: SecretStr = Field(
        default=SecretStr(""),
        description=f"Key of the MAC inside every smsgid, at least {MIN_CALLBACK_SECRET_BYTES} "
                    "bytes (empty: not set).",
    )
    callback_secret_previous: SecretStr | None = Field(
        default=None, description="Still accepted while a new callback secret rolls out."
    )
    ics_url: AnyHttpUrl = AnyHttpUrl(DEFAULT_ICS_URL)
    ics_timeout_s: float = Field(default=15.0, gt=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    link_ttl_s: int = Field(default=15 * 24 * 3600, ge=60,
                            description="How long a self-tracked short link works.")

    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"

    prefetch: int = Field(default=2000, ge=1, le=65535)
    batch_max: int = Field(default=1000, ge=1, le=1000)
    linger_ms: float = Field(default=20.0, ge=0)
    batches_in_flight: int = Field(default=4, ge=1, le=64)
    worker_lanes: WorkerLanes = Field(
        default="all",
        description="Queues `ics-sms worker` consumes: service, promotional or all (dedicated "
                    "service-lane workers are never slowed by a promotional backlog).",
    )
    consumer_timeout_s: float = Field(
        default=1800.0, ge=1, le=7 * 24 * 3600,
        description="The broker's consumer_timeout (RabbitMQ: 30 min by default): a worker "
                    "holds no more of a sender's messages than it sends in half of it.",
    )
    max_attempts: int = Field(default=10, ge=1, le=100)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    dedupe_window_s: int = Field(
        default=7 * 24 * 3600, ge=60,
        description="A message_id seen within this time is never sent again.",
    )
    receipt_deadline_s: float = Field(
        default=72 * 3600, gt=0,
        description="A submitted message with no final receipt by then ends expired.",
    )
    retention_s: int = Field(
        default=30 * 24 * 3600, ge=3600,
        description="How long per-message records, their timelines, the phone number index "
                    "and campaign counts are kept (at least the dedupe window).",
    )
    claim_lease_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="How long a batch's claim on its messages lasts before its ICS request; "
                    "messages of a worker that died before calling ICS are sent after it.",
    )
    sender_pause_s: float = Field(
        default=60.0, gt=0, description="How long a sender whose credentials ICS refused waits."
    )
    sender_unauthorized_after_s: float = Field(
        default=3600.0, gt=0,
        description="Messages of a sender whose credentials stay refused (or missing) end "
                    "failed (sender_unauthorized) after waiting this long.",
    )

    promo_window_start: time = Field(
        default=time(9, 0), description="Promotional SMS go out from (local time) ..."
    )
    promo_window_end: time = Field(
        default=time(21, 0), description="... until; start == end means around the clock."
    )
    promo_timezone: str = "Asia/Kolkata"

    metrics_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="Address the worker's and the receiver's metrics listeners bind to.",
    )
    metrics_port: int = Field(
        default=9100, ge=0, le=65535,
        description="Where `ics-sms worker` serves /metrics and /healthz; 0 turns it off.",
    )
    receiver_metrics_port: int = Field(
        default=9101, ge=0, le=65535,
        description="Where `ics-sms receiver` serves /metrics (never on the port ICS reaches); "
                    "0 turns it off.",
    )
    receiver_max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    connect_retry_s: float = Field(
        default=30.0, ge=0, description="How long services retry an unreachable broker."
    )

    console_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="Address `ics-sms console` binds to (never the receiver's public one).",
    )
    console_port: int = Field(default=8090, ge=1, le=65535,
                              description="Port of `ics-sms console`.")
    console_secure_cookie: bool = Field(
        default=False,
        description="Mark the console's session cookie Secure: set it when the console is "
                    "served behind TLS.",
    )
    console_session_s: float = Field(default=8 * 3600.0, ge=60, le=7 * 24 * 3600,
                                     description="How long a console login lasts.")
    rabbitmq_management_url: SecretStr | None = Field(
        default=None,
        description="http://user:password@host:15672 of the RabbitMQ management API: the "
                    "console's health page then shows unacked messages per queue too.",
    )

    @field_validator("senders_url", "senders_key", "rabbitmq_management_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``ICS_SMS_SENDERS_URL=`` (empty, as templates and compose files leave it) means
        unset, never "connect with libpq's defaults"."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        split_broker_url(value.get_secret_value())
        return value

    @field_validator("namespace")
    @classmethod
    def _ends_with_separator(cls, value: str) -> str:
        check_namespace(value)
        return value

    @field_validator("callback_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        size = len(value.get_secret_value().encode())
        if 0 < size < MIN_CALLBACK_SECRET_BYTES:
            raise ValueError(
                f"is {size} bytes, at least {MIN_CALLBACK_SECRET_BYTES} are needed: generate one "
                "with python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("promo_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def to_environment(self) -> dict[str, str]:
        """These settings as ``ICS_SMS_*`` variables, for a child process (they hold the
        secrets: pass them through the environment, never on a command line)."""
        env = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, time):
                text = value.strftime("%H:%M:%S")
            else:
                text = str(value)
            env[f"ICS_SMS_{name.upper()}"] = text
        return env

    @property
    def topology(self) -> Topology:
        return Topology(namespace=self.namespace, queue_type=self.queue_type)

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """Every broker address, in the order given (secrets included: never log them)."""
        return split_broker_url(self.broker_url.get_secret_value())

    @property
    def broker_url_redacted(self) -> str:
        return redact_url(self.broker_url.get_secret_value())

    def tracking_url(self, tracking_path: str) -> str:
        return str(self.public_url).rstrip("/") + tracking_path
