"""Metrics are scraped from a running worker process and change as messages flow."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from ics_sms.broker.base import Outgoing
from ics_sms.schemas.senders import Senders, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_ERROR, HEADER_REASON, Topology
from ics_sms.workers.metrics import count_outcomes
from tests.workers.conftest import SERVICE, FakeIcs, Pipeline, request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return samples(await response.text())


@pytest.fixture
def worker_settings(amqp_settings: Settings, fake_ics: FakeIcs) -> Settings:
    """A worker process shares only a real broker with the test: RabbitMQ here."""
    return amqp_settings.model_copy(update={"ics_url": fake_ics.url})


@pytest.fixture
async def worker_process(worker_settings: Settings) -> AsyncIterator[str]:
    save_senders(worker_settings.senders_file, Senders().add(SERVICE))
    port = free_port()
    env = {**os.environ,
           "ICS_SMS_BROKER_URL": worker_settings.broker_url.get_secret_value(),
           "ICS_SMS_NAMESPACE": worker_settings.namespace,
           "ICS_SMS_SENDERS_FILE": str(worker_settings.senders_file),
           "ICS_SMS_ICS_URL": str(worker_settings.ics_url),
           "ICS_SMS_CALLBACK_SECRET": "test-callback-secret-of-32-bytes-or-more",
           "ICS_SMS_METRICS_PORT": str(port), "ICS_SMS_LINGER_MS": "5"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "ics_sms", "worker",
                                                   env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    async with aiohttp.ClientSession() as http, \
                            http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert process.returncode is None, "the worker exited"
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def test_worker_metrics_count_consumed_messages_and_outcomes(
    worker_process: str, pipeline: Pipeline, fake_ics: FakeIcs
) -> None:
    before = await scrape(f"{worker_process}/metrics")
    consumed = ("ics_sms_worker_messages_consumed_total", frozenset({("lane", "service")}))
    assert before[consumed] == 0
    await pipeline.publish(*(request(i) for i in range(25)))
    await pipeline.next_events(25)
    after = await scrape(f"{worker_process}/metrics")
    assert after[consumed] == 25
    submitted = ("ics_sms_worker_outcomes_total",
                 frozenset({("sender", "otp"), ("outcome", "submitted")}))
    assert after[submitted] == 25
    assert after[("ics_sms_ics_requests_total",
                  frozenset({("sender", "otp"), ("code", "200")}))] >= 1
    assert after[("ics_sms_ics_batch_size_sum", frozenset())] == 25


def test_dead_lettered_messages_are_logged_per_sender_and_reason() -> None:
    topology = Topology(namespace="unit.")
    sender = f"s-{uuid.uuid4().hex[:8]}"

    def dead(reason: str, error: str) -> Outgoing:
        return Outgoing(topology.dead_exchange, "service", b"{}",
                        headers={HEADER_REASON: reason, HEADER_ERROR: error})

    event = Outgoing(topology.events_exchange, "sms.rejected", b"{}")
    batch = [[event, dead("dlt_missing", "dlt_template_id is required for +91 numbers")]
             for _ in range(3)] + [[dead("expired", "expires_at passed before sending")]]
    with capture_logs() as logs:
        count_outcomes(topology, sender, batch)
    lines = {line["reason"]: line for line in logs if line["event"] == "messages dead-lettered"}
    assert lines["dlt_missing"]["count"] == 3
    assert lines["dlt_missing"]["sender"] == sender
    assert lines["dlt_missing"]["example"] == "dlt_template_id is required for +91 numbers"
    assert lines["expired"]["count"] == 1
