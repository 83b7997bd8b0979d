"""Several broker addresses: one attempt tries each in turn, stays where it connected, and
after a lost connection starts with the next address (a dead node last, not first)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from ics_sms.broker.base import ConnectionLost
from ics_sms.broker.connect import connect_once, open_broker
from ics_sms.schemas.settings import Settings
from tests.chaos.harness import free_port
from tests.faults import ProxyThread, url_at

PASSWORD = "failover-s3cret"


def settings_for(*addresses: str) -> Settings:
    return Settings(broker_url=",".join(addresses), connect_retry_s=0)


async def test_a_dead_first_address_is_skipped_in_the_same_attempt(rabbitmq_url: str) -> None:
    dead = url_at(rabbitmq_url, free_port(), password=PASSWORD)
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
        rabbitmq_url: str, broker_proxy: ProxyThread) -> None:
    via_proxy = url_at(rabbitmq_url, broker_proxy.port)
    settings = settings_for(via_proxy, rabbitmq_url)
    broker = await connect_once(settings, name="failover test")
    assert f"127.0.0.1:{broker_proxy.port}" in repr(broker)  # in order: the first address

    broker_proxy.cut()  # that node is gone: its connection drops, new ones are refused
    with pytest.raises(ConnectionLost):
        await broker.closed
    broker_proxy.restore()  # even reachable again, it is tried after the others

    with capture_logs() as logs:
        fresh = await connect_once(settings, name="failover test")
    try:
        assert f"127.0.0.1:{broker_proxy.port}" not in repr(fresh)
        assert not [e for e in logs if e["event"].startswith("broker address unreachable")]
    finally:
        await fresh.close()


async def test_closing_a_connection_ourselves_keeps_the_address(
        rabbitmq_url: str, broker_proxy: ProxyThread) -> None:
    settings = settings_for(url_at(rabbitmq_url, broker_proxy.port), rabbitmq_url)
    broker = await connect_once(settings, name="failover test")
    await broker.close()
    fresh = await connect_once(settings, name="failover test")
    try:
        assert f"127.0.0.1:{broker_proxy.port}" in repr(fresh)
    finally:
        await fresh.close()


async def test_a_service_reconnects_through_the_addresses_after_a_node_goes(
        rabbitmq_url: str, broker_proxy: ProxyThread) -> None:
    """What the worker and the receiver do: the retry loop over connect_once."""
    settings = settings_for(url_at(rabbitmq_url, broker_proxy.port),
                            url_at(rabbitmq_url, free_port()), rabbitmq_url)
    broker = await open_broker(settings, name="failover test")
    broker_proxy.cut()
    with pytest.raises(ConnectionLost):
        await broker.closed
    fresh = await open_broker(settings, name="failover test", retry_s=5)
    try:
        assert fresh.is_open
        assert f"127.0.0.1:{broker_proxy.port}" not in repr(fresh)
    finally:
        await fresh.close()
