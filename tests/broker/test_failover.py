"""Several broker addresses: one attempt tries each in turn, stays where it connected, and
after a lost connection starts with the next address (a dead node last, not first)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from ics_sms.broker.base import ConnectionLost
from ics_sms.broker.connect import connect_once, open_broker
from ics_sms.schemas.settings import Settings
from tests.chaos.harness import free_port
from tests.faults import ProxyThread

PASSWORD = "failover-s3cret"


def at(url: str, port: int, *, password: str | None = None) -> str:
    """``url`` pointing at 127.0.0.1:``port`` (optionally with another password)."""
    parts = urlsplit(url)
    user = parts.username or "guest"
    secret = parts.password if password is None else password
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@127.0.0.1:{port}"))


def settings_for(*addresses: str) -> Settings:
    return Settings(broker_url=",".join(addresses), connect_retry_s=0)


@pytest.fixture
def proxy(rabbitmq_url: str) -> Iterator[ProxyThread]:
    target = urlsplit(rabbitmq_url)
    relay = ProxyThread(target.hostname or "127.0.0.1", target.port or 5672).start()
    yield relay
    relay.close()


async def test_a_dead_first_address_is_skipped_in_the_same_attempt(rabbitmq_url: str) -> None:
    dead = at(rabbitmq_url, free_port(), password=PASSWORD)
    settings = settings_for(dead, rabbitmq_url)
    with capture_logs() as logs:
        broker = await connect_once(settings, name="failover test")
    try:
        assert broker.is_open
        [event] = [e for e in logs if e["event"].startswith("broker address unreachable")]
        assert "127.0.0.1" in " ".join(event["failed"])
        assert PASSWORD not in repr(logs)
    finally:
        await broker.close()
    # it stays with the address that answered: the next attempt does not try the dead one
    with capture_logs() as logs:
        again = await connect_once(settings, name="failover test")
    await again.close()
    assert not [e for e in logs if e["event"].startswith("broker address unreachable")]


async def test_every_address_dead_is_one_error_naming_each_without_passwords() -> None:
    first, second = free_port(), free_port()
    settings = settings_for(f"amqp://guest:{PASSWORD}@127.0.0.1:{first}/",
                            f"amqp://other:{PASSWORD}-2@127.0.0.1:{second}/")
    with pytest.raises(ConnectionLost) as caught:
        await open_broker(settings, name="failover test", retry_s=0)
    text = str(caught.value)
    assert "none of the 2 broker addresses answered" in text
    assert f"guest:***@127.0.0.1:{first}" in text
    assert f"other:***@127.0.0.1:{second}" in text
    assert PASSWORD not in text
    assert settings.broker_url_redacted in text  # the label of the retry loop, redacted


async def test_after_a_lost_connection_the_next_attempt_starts_with_the_next_address(
        rabbitmq_url: str, proxy: ProxyThread) -> None:
    via_proxy = at(rabbitmq_url, proxy.port)
    settings = settings_for(via_proxy, rabbitmq_url)
    broker = await connect_once(settings, name="failover test")
    assert f"127.0.0.1:{proxy.port}" in repr(broker)  # in order: the first address

    proxy.cut()  # that node is gone: its connection drops, new ones are refused
    with pytest.raises(ConnectionLost):
        await broker.closed
    proxy.restore()  # even reachable again, it is tried after the others

    with capture_logs() as logs:
        fresh = await connect_once(settings, name="failover test")
    try:
        assert f"127.0.0.1:{proxy.port}" not in repr(fresh)
        assert not [e for e in logs if e["event"].startswith("broker address unreachable")]
    finally:
        await fresh.close()


async def test_closing_a_connection_ourselves_keeps_the_address(
        rabbitmq_url: str, proxy: ProxyThread) -> None:
    settings = settings_for(at(rabbitmq_url, proxy.port), rabbitmq_url)
    broker = await connect_once(settings, name="failover test")
    await broker.close()
    fresh = await connect_once(settings, name="failover test")
    try:
        assert f"127.0.0.1:{proxy.port}" in repr(fresh)
    finally:
        await fresh.close()


async def test_a_service_reconnects_through_the_addresses_after_a_node_goes(
        rabbitmq_url: str, proxy: ProxyThread) -> None:
    """What the worker and the receiver do: the retry loop over connect_once."""
    settings = settings_for(at(rabbitmq_url, proxy.port), at(rabbitmq_url, free_port()),
                            rabbitmq_url)
    broker = await open_broker(settings, name="failover test")
    proxy.cut()
    with pytest.raises(ConnectionLost):
        await broker.closed
    fresh = await open_broker(settings, name="failover test", retry_s=5)
    try:
        assert fresh.is_open
        assert f"127.0.0.1:{proxy.port}" not in repr(fresh)
    finally:
        await fresh.close()
