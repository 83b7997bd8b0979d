"""Configuration: one typed object read from ``ICS_SMS_*`` once, secrets kept secret."""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import (
    DEFAULT_ICS_URL,
    MIN_CALLBACK_SECRET_BYTES,
    Settings,
    redact_url,
)
from ics_sms.schemas.topology import QueueType


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without ``ICS_SMS_*`` variables."""
    for name in list(os.environ):
        if name.startswith("ICS_SMS_"):
            monkeypatch.delenv(name)


def test_the_defaults() -> None:
    settings = Settings()
    assert settings.broker_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert settings.namespace == ""
    assert settings.queue_type is QueueType.QUORUM
    assert settings.senders_file == Path("senders.toml")
    assert str(settings.ics_url).rstrip("/") == DEFAULT_ICS_URL
    assert settings.promo_window_start == time(9, 0)
    assert settings.promo_window_end == time(21, 0)
    assert settings.promo_timezone == "Asia/Kolkata"


def test_settings_come_from_ics_sms_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", "amqp://app:pw@rabbit:5672/sms")
    monkeypatch.setenv("ICS_SMS_NAMESPACE", "staging.")
    monkeypatch.setenv("ICS_SMS_QUEUE_TYPE", "classic")
    monkeypatch.setenv("ICS_SMS_SENDERS_FILE", "/etc/ics-sms/senders.toml")
    monkeypatch.setenv("ICS_SMS_PUBLIC_URL", "https://hooks.example.com")
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET", "s3cret" * 6)
    monkeypatch.setenv("ICS_SMS_ICS_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("ICS_SMS_PREFETCH", "50")
    monkeypatch.setenv("ICS_SMS_LINGER_MS", "5.5")
    monkeypatch.setenv("ICS_SMS_PROMO_WINDOW_START", "10:30")
    monkeypatch.setenv("ICS_SMS_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.broker_url.get_secret_value() == "amqp://app:pw@rabbit:5672/sms"
    assert settings.namespace == "staging."
    assert settings.queue_type is QueueType.CLASSIC
    assert settings.senders_file == Path("/etc/ics-sms/senders.toml")
    assert settings.tracking_url("/x") == "https://hooks.example.com/x"
    assert settings.callback_secret.get_secret_value() == "s3cret" * 6
    assert str(settings.ics_url).startswith("http://127.0.0.1:9000")
    assert settings.prefetch == 50
    assert settings.linger_ms == 5.5
    assert settings.promo_window_start == time(10, 30)
    assert settings.log_format == "json"


def test_the_topology_follows_namespace_and_queue_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_NAMESPACE", "t9.")
    monkeypatch.setenv("ICS_SMS_QUEUE_TYPE", "classic")
    topology = Settings().topology
    assert topology.send_exchange == "t9.sms.send"
    assert topology.queue_type is QueueType.CLASSIC


def test_variables_without_the_prefix_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMESPACE", "wrong.")
    monkeypatch.setenv("PREFETCH", "1")
    assert Settings().namespace == ""
    assert Settings().prefetch == 2000


def test_unknown_ics_sms_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_SOMETHING_NEW", "1")
    assert Settings().namespace == ""


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("ICS_SMS_PREFETCH", "0", "prefetch"),
        ("ICS_SMS_PREFETCH", "many", "prefetch"),
        ("ICS_SMS_BATCH_MAX", "1001", "batch_max"),
        ("ICS_SMS_NAMESPACE", "has space", "namespace"),
        ("ICS_SMS_QUEUE_TYPE", "stream", "queue_type"),
        ("ICS_SMS_PUBLIC_URL", "not a url", "public_url"),
        ("ICS_SMS_LOG_LEVEL", "verbose", "log_level"),
        ("ICS_SMS_PROMO_TIMEZONE", "Mars/Olympus", "promo_timezone"),
        ("ICS_SMS_CONNECT_RETRY_S", "-1", "connect_retry_s"),
        ("ICS_SMS_BROKER_URL", "rabbitmq://foo", "broker_url"),
        ("ICS_SMS_BROKER_URL", "amqp://h:port/", "broker_url"),
        ("ICS_SMS_NAMESPACE", "down", "namespace"),
        ("ICS_SMS_CALLBACK_SECRET", "x", "callback_secret"),
        ("ICS_SMS_RECEIVER_METRICS_PORT", "70000", "receiver_metrics_port"),
    ],
)
def test_invalid_variables_name_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [line.partition(":")[0] for line in describe(caught.value)] == [field]


def test_an_unknown_time_zone_is_named_in_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_PROMO_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe(caught.value) == ["promo_timezone: unknown time zone 'Mars/Olympus'"]


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.namespace = "x."  # type: ignore[misc]


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", "amqp://app:broker-pw@rabbit/")
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET", "callback-pw" * 3)
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET_PREVIOUS", "old-callback-pw")
    text = repr(Settings()) + str(Settings())
    for secret in ("broker-pw", "callback-pw", "old-callback-pw"):
        assert secret not in text


def test_the_redacted_broker_url_keeps_user_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", "amqp://app:broker-pw@rabbit:5672/sms")
    assert Settings().broker_url_redacted == "amqp://app:***@rabbit:5672/sms"


@pytest.mark.parametrize(
    ("public_url", "tracking_url"),
    [
        ("https://hooks.example.com", "https://hooks.example.com/ics/tok/receipts"),
        ("https://hooks.example.com/", "https://hooks.example.com/ics/tok/receipts"),
        ("https://example.com/sms/", "https://example.com/sms/ics/tok/receipts"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/ics/tok/receipts"),
    ],
)
def test_tracking_urls_join_the_public_url_and_the_path(
    monkeypatch: pytest.MonkeyPatch, public_url: str, tracking_url: str
) -> None:
    monkeypatch.setenv("ICS_SMS_PUBLIC_URL", public_url)
    assert Settings().tracking_url("/ics/tok/receipts") == tracking_url


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("amqp://app:p%40ss@rabbit/vhost", "amqp://app:***@rabbit/vhost"),
        ("amqps://app:pw@rabbit.example.com:5671/%2F?heartbeat=30",
         "amqps://app:***@rabbit.example.com:5671/%2F?heartbeat=30"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://app:pw@[::1]:5672/", "amqp://app:***@[::1]:5672/"),
        ("amqp://app:pw@[2001:db8::1]/", "amqp://app:***@[2001:db8::1]/"),
        ("amqp://localhost:5672/", "amqp://localhost:5672/"),
        ("amqp://guest@localhost/", "amqp://guest@localhost/"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url", ["amqp://guest:hunter2@localhost:5672/", "amqp://u:hunter2@[::1]:5672/"]
)
def test_redacted_urls_never_hold_the_password(url: str) -> None:
    assert "hunter2" not in redact_url(url)


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@rabbit:5672/", "amqps://u:p@rabbit/vhost", "memory://", "memory://x"]
)
def test_the_broker_schemes_the_services_speak(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", url)
    assert Settings().broker_url.get_secret_value() == url


def test_an_unsupported_broker_scheme_names_the_supported_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", "rabbitmq://app:broker-pw@foo")
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = describe(caught.value)
    assert line.startswith("broker_url: scheme rabbitmq:// is not supported: use amqp://")
    assert "broker-pw" not in line


def test_a_broken_broker_url_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICS_SMS_BROKER_URL", "amqp://app:broker-pw@rabbit:notaport/")
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = describe(caught.value)
    assert line.startswith("broker_url: not a valid URL")
    assert "broker-pw" not in line


@pytest.mark.parametrize("namespace", ["", "staging.", "blue-", "t_1_"])
def test_a_namespace_ending_with_a_separator_keeps_its_names(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("ICS_SMS_NAMESPACE", namespace)
    assert Settings().topology.send_queue(Lane.SERVICE) == f"{namespace}sms.send.service"


def test_a_namespace_without_a_separator_is_refused_with_an_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "down" would give "downsms.send.service"; adding a "." silently would move the
    # queues of a deployment that already runs with it, so it is refused instead.
    monkeypatch.setenv("ICS_SMS_NAMESPACE", "down")
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = describe(caught.value)
    assert "'down.' gives down.sms.send" in line


def test_a_short_callback_secret_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET", "x" * (MIN_CALLBACK_SECRET_BYTES - 1))
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = describe(caught.value)
    assert line.startswith(f"callback_secret: is 31 bytes, at least {MIN_CALLBACK_SECRET_BYTES}")
    assert "x" * 31 not in line


def test_a_callback_secret_counts_bytes_not_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET", "é" * 16)  # 16 characters, 32 bytes
    assert len(Settings().callback_secret.get_secret_value()) == 16


def test_the_previous_callback_secret_may_be_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # It is the one being rotated away from: a deployment that had a short secret must be
    # able to move to a long one while receipts signed with the old one still arrive.
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET", "n" * 32)
    monkeypatch.setenv("ICS_SMS_CALLBACK_SECRET_PREVIOUS", "old")
    assert Settings().callback_secret_previous is not None


def test_metrics_listen_on_loopback_by_default() -> None:
    settings = Settings()
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 9100)
    assert settings.receiver_metrics_port == 9101


def test_an_empty_registry_url_means_no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICS_SMS_SENDERS_URL", "")
    monkeypatch.setenv("ICS_SMS_SENDERS_KEY", "  ")
    monkeypatch.setenv("ICS_SMS_RABBITMQ_MANAGEMENT_URL", "")
    settings = Settings()
    assert settings.senders_url is None and settings.senders_key is None
    assert settings.rabbitmq_management_url is None
