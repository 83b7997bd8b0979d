"""Shared fixtures: a real RabbitMQ for integration tests, isolated per test by namespace.

The broker comes from ``RABBITMQ_URL`` (or ``ICS_SMS_BROKER_URL``); otherwise testcontainers
starts one where Docker runs. Under ``CI=true`` a missing broker is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import psycopg
import pytest
from redis import Redis
from redis.exceptions import RedisError

from ics_sms.broker.admin import delete_topology
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology
from ics_sms.stores.redis import delete_prefix
from tests.faults import ProxyThread


def _docker_available() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


def _broker_reachable(url: str) -> str | None:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except Exception as exc:  # any failure means "not usable"; the reason is reported
        return f"{type(exc).__name__}: {exc}"
    connection.close()
    return None


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    url = os.environ.get("RABBITMQ_URL") or os.environ.get("ICS_SMS_BROKER_URL")
    if url and not url.startswith("memory:"):
        problem = _broker_reachable(url)
        if problem is None:
            yield url
            return
        reason = f"RabbitMQ at RABBITMQ_URL is not reachable ({problem})"
    elif _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:4.2-alpine") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/"
        return
    else:
        reason = "no RABBITMQ_URL set and no Docker engine for testcontainers"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs RabbitMQ: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis from ``ICS_SMS_REDIS_URL`` (default the local one); required under CI=true."""
    url = os.environ.get("ICS_SMS_REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        client = Redis.from_url(url, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # any failure means "not usable"; the reason is reported
        reason = f"Redis at {url} is not reachable ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs Redis: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """PostgreSQL for the senders registry, from ``ICS_SMS_TEST_POSTGRES_URL`` (default the
    local one); required under CI=true."""
    url = (os.environ.get("ICS_SMS_TEST_POSTGRES_URL")
           or "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL at ICS_SMS_TEST_POSTGRES_URL is not reachable ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs PostgreSQL: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def namespace() -> str:
    """A unique prefix for every exchange and queue of one test."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace=namespace)


@pytest.fixture
def amqp_settings(
    rabbitmq_url: str, namespace: str, tmp_path: Path, topology: Topology
) -> Iterator[Settings]:
    """Settings pointing at the test broker with a namespace of its own; cleaned up after."""
    settings = Settings(
        broker_url=rabbitmq_url,
        namespace=namespace,
        senders_file=tmp_path / "senders.toml",
        callback_secret="test-callback-secret-of-32-bytes-or-more",
        connect_retry_s=5,
    )
    yield settings
    delete_topology(rabbitmq_url, topology)
    delete_redis_keys(settings.redis_url, f"ics-sms:{namespace}")


def delete_redis_keys(url: str, prefix: str) -> None:
    """Remove what a test left in Redis under its namespace (records live 30 days)."""
    with contextlib.suppress(RedisError, OSError):  # no Redis for this test: nothing there
        asyncio.run(delete_prefix(url, prefix))


@pytest.fixture
def broker_proxy(rabbitmq_url: str) -> Iterator[ProxyThread]:
    """A TCP proxy in front of the test broker (close it to cut every connection)."""
    target = urlsplit(rabbitmq_url)
    relay = ProxyThread(target.hostname or "127.0.0.1", target.port or 5672).start()
    yield relay
    relay.close()
