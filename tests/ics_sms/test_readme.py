"""The README's "Running against RabbitMQ" works as pasted: every message ends delivered/failed.

The fenced block under that heading runs as one bash script from the root of the checkout,
on the test broker, in a namespace of its own, on free ports (the block's 9090 and 8080 are
replaced), with a senders file in a temporary folder. Its services keep running after the
script ends, as they would in a terminal; the test then reads the namespace's durable
``sms.events`` queue until every row of the campaign has a final status, and stops them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from redis import Redis

from ics_sms.producers.campaign import CampaignDefaults, read_campaign, valid_requests
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HEADING = "## Running against RabbitMQ"
CAMPAIGN = ROOT / "examples" / "campaign.csv"
FINAL = {Status.DELIVERED, Status.FAILED, Status.REJECTED, Status.EXPIRED}
DEADLINE_S = 120.0


def readme_block() -> str:
    """The first fenced ``bash`` block under the heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    section = section[:section.index("\n## ", len(HEADING))]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no bash block under {HEADING!r}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def expected_outcomes() -> dict[str, Status]:
    """Final status of each row by message id (derived as the block's publish derives it),
    from the sandbox's numbers."""
    outcomes = {}
    defaults = CampaignDefaults(campaign_id="spring-sale", dlt_template_id="1207161234567890123")
    for request in valid_requests(read_campaign(CAMPAIGN, defaults=defaults)):
        failing = request.to.removeprefix("+919000000").startswith("9")
        outcomes[request.message_id] = Status.FAILED if failing else Status.DELIVERED
    return outcomes


class Script:
    """The block, run by bash in a process group of its own (its ``&`` services too)."""

    def __init__(self, block: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                ["bash", "-e", "-c", block], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.group = self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the group (the services drain and exit), SIGKILL what is left."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not _group_alive(self.group):
                return
            os.killpg(self.group, signum)
            deadline = time.monotonic() + 30
            while _group_alive(self.group) and time.monotonic() < deadline:
                time.sleep(0.1)  # polling exit: the services are not our children


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@pytest.fixture
def script_env(amqp_settings: Settings, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ICS_SMS_") and k != "ACME_ICS_TOKEN"}
    env.update({
        "ICS_SMS_BROKER_URL": amqp_settings.broker_url.get_secret_value(),
        "ICS_SMS_NAMESPACE": amqp_settings.namespace,
        "ICS_SMS_SENDERS_FILE": str(tmp_path / "senders.toml"),
        "ICS_SMS_REDIS_URL": redis_url,
        "ICS_SMS_METRICS_PORT": "0",
        "ICS_SMS_RECEIVER_METRICS_PORT": "0",
        "ICS_SMS_LOG_FORMAT": "json",
    })
    yield env
    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"ics-sms:{amqp_settings.namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def final_statuses(rabbitmq_url: str, queue: str, wanted: set[str],
                   script: Script) -> dict[str, Status]:
    """Read the durable events queue until each wanted message has a final event."""
    final: dict[str, Status] = {}
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + DEADLINE_S
        for _method, _props, body in channel.consume(queue, inactivity_timeout=1.0):
            if body is not None:
                event = ReceiptEvent.model_validate_json(body)
                channel.basic_ack(_method.delivery_tag)
                if event.status in FINAL and event.message_id in wanted:
                    final[event.message_id] = event.status
            if set(final) == wanted:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"only {final} of {sorted(wanted)} ended in time; the script "
                            f"said:\n{script.output()[-4000:]}")
        channel.cancel()
    finally:
        connection.close()
    return final


def test_the_block_is_what_a_newcomer_needs() -> None:
    block = readme_block()
    for needed in ("ACME_ICS_TOKEN=", "ICS_SMS_CALLBACK_SECRET=", "ics-sms sandbox",
                   "ics-sms topology", "ics-sms senders add", "ics-sms worker",
                   "ics-sms receiver", "ics-sms publish examples/campaign.csv",
                   "--dlt-template-id", "ics-sms events"):
        assert needed in block, needed
    assert "ICS_SMS_PUBLIC_URL=http://127.0.0.1:8080" in block  # the sandbox can post there


def test_the_readme_block_delivers_the_sample_campaign(
    script_env: dict[str, str], amqp_settings: Settings, rabbitmq_url: str, tmp_path: Path
) -> None:
    ics_port, receiver_port = free_port(), free_port()
    block = readme_block().replace("9090", str(ics_port)).replace("8080", str(receiver_port))
    expected = expected_outcomes()
    script = Script(block, script_env, tmp_path / "script.log")
    try:
        assert script.process.wait(DEADLINE_S) == 0, script.output()
        assert f"published {len(expected)} message(s)" in script.output(), script.output()
        final = final_statuses(rabbitmq_url, amqp_settings.topology.events_queue,
                               set(expected), script)
    finally:
        script.stop()
    assert final == expected
    assert Status.FAILED in final.values() and Status.DELIVERED in final.values()
