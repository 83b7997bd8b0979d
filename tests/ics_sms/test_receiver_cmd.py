"""``ics-sms receiver``: starts, serves, stops on SIGTERM, or says in one line why it cannot."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pika
import pytest
import urllib3
from click.testing import CliRunner, Result

from ics_sms.cli.receiver_cmd import receiver_command
from ics_sms.schemas.messages import ReceiptEvent
from ics_sms.schemas.senders import Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner

SENDER = Sender(name="acme-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                username="acme", token="not-a-real-ics-token")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def env(amqp_settings: Settings) -> dict[str, str]:
    save_senders(amqp_settings.senders_file, Senders().add(SENDER))
    return {
        "ICS_SMS_BROKER_URL": amqp_settings.broker_url.get_secret_value(),
        "ICS_SMS_NAMESPACE": amqp_settings.namespace,
        "ICS_SMS_SENDERS_FILE": str(amqp_settings.senders_file),
        "ICS_SMS_CALLBACK_SECRET": amqp_settings.callback_secret.get_secret_value(),
        "ICS_SMS_CONNECT_RETRY_S": "0",
        "ICS_SMS_REDIS_URL": "memory://",
        "ICS_SMS_RECEIVER_METRICS_PORT": str(free_port()),
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(receiver_command, list(args), env=env)


def assert_one_line_failure(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0]


class TestCannotStart:
    def test_without_callback_secret(self, env: dict[str, str]) -> None:
        result = invoke({**env, "ICS_SMS_CALLBACK_SECRET": ""})
        assert_one_line_failure(result, "ICS_SMS_CALLBACK_SECRET is not set")

    def test_invalid_senders_file(self, env: dict[str, str], tmp_path: Path) -> None:
        broken = tmp_path / "broken.toml"
        broken.write_text("[senders.x]\ntype = 'nope'\n")
        result = invoke({**env, "ICS_SMS_SENDERS_FILE": str(broken)})
        assert_one_line_failure(result, str(broken))

    def test_port_taken(self, env: dict[str, str]) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = invoke(env, "--port", str(port))
        assert_one_line_failure(result, f"cannot listen on 127.0.0.1:{port}")

    def test_metrics_port_taken(self, env: dict[str, str]) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = invoke({**env, "ICS_SMS_RECEIVER_METRICS_PORT": str(port)}, "--port", "0")
        assert_one_line_failure(result, f"cannot serve metrics on 127.0.0.1:{port}")

    def test_broker_unreachable(self, env: dict[str, str]) -> None:
        result = invoke({**env, "ICS_SMS_BROKER_URL": "amqp://guest:secret@127.0.0.1:9/"},
                        "--port", "0")
        assert_one_line_failure(result, "unreachable after 0s")
        assert "secret" not in result.output


# -- a real process --------------------------------------------------------------------------


class Process:
    """The receiver as a child process; its stderr log lines are read as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "ics_sms.cli.receiver_cmd", "--port", "0"],
            env={**os.environ, **env, "ICS_SMS_LOG_FORMAT": "json"},
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait(10)
        self.reader.join(10)
        assert self.child.stderr is not None
        self.child.stderr.close()

    def _read(self) -> None:
        assert self.child.stderr is not None
        for raw in self.child.stderr:
            try:
                self.lines.put(orjson.loads(raw))
            except orjson.JSONDecodeError:
                self.lines.put({"event": raw.decode(errors="replace")})

    def wait_for(self, event: str, timeout_s: float = 60) -> dict[str, object]:
        while True:
            line = self.lines.get(timeout=timeout_s)
            self.seen.append(line)
            if line.get("event") == event:
                return line


@pytest.fixture
def process(env: dict[str, str]) -> Iterator[Process]:
    running = Process({**env, "ICS_SMS_CONNECT_RETRY_S": "10"})
    yield running
    running.stop()


def test_serves_receipts_and_stops_cleanly_on_sigterm(
    process: Process, amqp_settings: Settings, rabbitmq_url: str
) -> None:
    port = process.wait_for("receiver listening")["port"]
    signer = SmsgidSigner(amqp_settings.callback_secret.get_secret_value())
    smsgid = signer.sign("m-1", SENDER.name)
    body = orjson.dumps([{"event": "delivered", "data": [{"ts": 1764230400, "meta": smsgid}]}])
    response = urllib3.request("POST", f"http://127.0.0.1:{port}{SENDER.tracking_path()}",
                               body=body, headers={"Content-Type": "application/json"})
    assert (response.status, orjson.loads(response.data)["processed"]) == (200, 1)

    process.child.send_signal(signal.SIGTERM)
    process.wait_for("receiver stopped")
    assert process.child.wait(30) == 0
    assert not any(line.get("level") == "error" for line in process.seen)
    assert SENDER.tracking_token not in str(process.seen)

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    method, _props, event_body = connection.channel().basic_get(
        amqp_settings.topology.events_queue, auto_ack=True)
    connection.close()
    assert method is not None
    assert ReceiptEvent.model_validate_json(event_body).message_id == "m-1"


def test_metrics_are_served_on_their_own_loopback_port_only(
    process: Process, env: dict[str, str]
) -> None:
    port = process.wait_for("receiver listening")["port"]
    public = urllib3.request("GET", f"http://127.0.0.1:{port}/metrics")
    assert public.status == 404
    metrics_port = env["ICS_SMS_RECEIVER_METRICS_PORT"]
    scraped = urllib3.request("GET", f"http://127.0.0.1:{metrics_port}/metrics")
    assert scraped.status == 200
    assert b"ics_sms_receiver_requests_total" in scraped.data
    with socket.socket() as probe:  # loopback only: not reachable on another address
        assert probe.connect_ex((_other_local_address(), int(metrics_port))) != 0


def _other_local_address() -> str:
    """An address of this host that is not loopback (the one a default route would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        address: str = probe.getsockname()[0]
    return address
