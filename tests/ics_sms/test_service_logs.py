"""``ics-sms receiver`` and ``ics-sms worker`` as real processes in JSON mode: every line
they write parses as JSON, and none shows a tracking token, an ICS token or a secret, also
when aiohttp, pika or asyncio write the line (malformed requests, an ICS echoing secrets).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner
from pydantic import SecretStr

from ics_sms.broker.codec import send_message
from ics_sms.broker.connect import open_broker
from ics_sms.cli.main import cli
from ics_sms.schemas.messages import ReceiptEvent, SendRequest, Status
from ics_sms.schemas.senders import Lane, Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings

TRACKING_TOKEN = "Zq3vY8c1XkP0s-Ab_9tLmw"
ICS_TOKEN = "ics-token-must-not-leak-0042"
CALLBACK_SECRET = "callback-secret-must-not-leak-0123456789"
BROKER_PASSWORD = "broker-password-must-not-leak"
SECRETS = (TRACKING_TOKEN, ICS_TOKEN, CALLBACK_SECRET, BROKER_PASSWORD)

SENDER = Sender(name="acme-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                username="acme", token=SecretStr(ICS_TOKEN), tracking_token=TRACKING_TOKEN)


class Service:
    """``python -m ics_sms <command>`` (what ``ics-sms`` runs); stderr kept line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "ics_sms", *args],
            env={**os.environ, **env, "ICS_SMS_LOG_FORMAT": "json"},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[bytes] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.child.stderr is not None
        for raw in self.child.stderr:
            with self._new:
                self.lines.append(raw)
                self._new.notify_all()

    def wait_for(self, event: str, timeout_s: float = 60) -> dict[str, Any]:
        """The first JSON line whose ``event`` is ``event``."""
        def found() -> dict[str, Any] | None:
            for raw in self.lines:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if record.get("event") == event:
                    return dict(record)
            return None

        with self._new:
            assert self._new.wait_for(lambda: found() is not None or self.child.poll() is not None,
                                      timeout_s), f"no {event!r} in {self.lines}"
        record = found()
        assert record is not None, f"exited without {event!r}: {self.lines}"
        return record

    def stop(self) -> int:
        """SIGTERM, then every line the process wrote."""
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        code = self.child.wait(60)
        self._reader.join(10)
        assert self.child.stderr is not None
        self.child.stderr.close()
        return code

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait(10)


def assert_all_json_without_secrets(lines: list[bytes]) -> list[dict[str, Any]]:
    records = []
    for raw in lines:
        record = orjson.loads(raw)  # raises on the first line that is not one JSON object
        assert isinstance(record, dict), raw
        records.append(record)
        for secret in SECRETS:
            assert secret.encode() not in raw, raw
    return records


@pytest.fixture
def env(amqp_settings: Settings, rabbitmq_url: str) -> dict[str, str]:
    save_senders(amqp_settings.senders_file, Senders().add(SENDER))
    return {
        "ICS_SMS_BROKER_URL": rabbitmq_url,
        "ICS_SMS_NAMESPACE": amqp_settings.namespace,
        "ICS_SMS_SENDERS_FILE": str(amqp_settings.senders_file),
        "ICS_SMS_CALLBACK_SECRET": CALLBACK_SECRET,
        "ICS_SMS_CONNECT_RETRY_S": "10",
        "ICS_SMS_REDIS_URL": "memory://",
        "ICS_SMS_METRICS_PORT": "0",
    }


# -- the receiver under malformed requests ------------------------------------------------

PATH = f"/ics/{TRACKING_TOKEN}/receipts".encode()
MALFORMED = {
    "bad HTTP version": b"POST " + PATH + b" HTTP/1.1x\r\nHost: a\r\n\r\n",
    "request line over 8190 bytes": b"POST " + PATH + b"?" + b"a" * 9000
                                    + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "space in the path": b"POST " + PATH.replace(b"/receipts", b"/rec eipts")
                         + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "non-ASCII byte in the path": b"POST " + PATH.replace(b"/receipts", b"/rec\xffeipts")
                                  + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad header with a bearer token": b"POST " + PATH + b" HTTP/1.1\r\nHost: a\r\n"
                                      + f"Authorization: Bearer {ICS_TOKEN}\x01\r\n".encode()
                                      + b"\r\n",
}


def send_raw(port: int, request: bytes) -> bytes:
    """``request`` on its own connection; the answer, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def receiver(env: dict[str, str]) -> Iterator[Service]:
    service = Service(env, "receiver", "--port", "0")
    yield service
    service.kill()


def test_receiver_lines_are_json_without_tokens_under_malformed_requests(
    receiver: Service,
) -> None:
    port = receiver.wait_for("receiver listening")["port"]
    for name, request in MALFORMED.items():
        answer = send_raw(port, request)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), name
    assert receiver.stop() == 0

    records = assert_all_json_without_secrets(receiver.lines)
    errors = [r for r in records if r.get("logger") == "aiohttp.server"]
    assert len(errors) == len(MALFORMED)  # aiohttp did log each one: the check means something
    assert all(r["level"] == "error" and "Traceback" in r["exception"] for r in errors)
    assert sum("/ics/***/" in r["exception"] for r in errors) >= 4  # readable, redacted
    assert records[-1]["event"] == "receiver stopped"


# -- the worker: an ICS echoing secrets, a broker that cannot be reached ------------------


def echoing_ics() -> web.Application:
    """ICS refusing every batch and quoting the request back, secrets and all."""
    async def datasend(request: web.Request) -> web.Response:
        body = await request.json()
        text = (f"invalid request from {request.headers.get('Authorization')}: "
                f"dlrurl {body['dlrurl']} is not whitelisted")
        return web.Response(status=400, text=text)

    app = web.Application()
    app.router.add_post("/datasend", datasend)
    return app


@pytest.fixture
async def ics_url() -> AsyncIterator[str]:
    runner = web.AppRunner(echoing_ics())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_worker_lines_are_json_without_secrets_when_ics_echoes_them(
    env: dict[str, str], ics_url: str, amqp_settings: Settings,
) -> None:
    settings = amqp_settings.model_copy(update={"connect_retry_s": 10})
    broker = await open_broker(settings, name="test")
    await broker.declare(settings.topology)
    events: asyncio.Queue[ReceiptEvent] = asyncio.Queue()
    await broker.consume(settings.topology.events_queue, 10, lambda d: (
        events.put_nowait(ReceiptEvent.model_validate_json(d.body)), broker.ack(d)))
    request = SendRequest(message_id="m-1", campaign_id="c", to="+447700900123", text="hi")
    await broker.publish([send_message(settings.topology, request, Lane.SERVICE)])

    worker = Service({**env, "ICS_SMS_ICS_URL": ics_url,
                      "ICS_SMS_PUBLIC_URL": "https://hooks.example.com"}, "worker")
    try:
        async with asyncio.timeout(60):
            event = await events.get()
        code = await asyncio.to_thread(worker.stop)
    finally:
        worker.kill()
        await broker.close()
    assert code == 0
    assert event.status is Status.REJECTED
    assert "Bearer ***" in (event.error or "") and "/ics/***/receipts" in (event.error or "")
    records = assert_all_json_without_secrets(worker.lines)
    [refused] = [r for r in records if r["event"] == "ICS batch not accepted"]
    assert refused["reason"] == event.error


def test_worker_lines_are_json_without_the_password_when_the_broker_is_unreachable(
    env: dict[str, str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    worker = Service({**env, "ICS_SMS_LOG_LEVEL": "debug", "ICS_SMS_CONNECT_RETRY_S": "1",
                      "ICS_SMS_BROKER_URL":
                          f"amqp://app:{BROKER_PASSWORD}@127.0.0.1:{closed_port}/"},
                     "worker")
    try:
        worker.child.wait(60)  # it gives up after ICS_SMS_CONNECT_RETRY_S
        code = worker.stop()
    finally:
        worker.kill()
    assert code == 1
    records = assert_all_json_without_secrets(worker.lines)
    assert any(r["event"] == "broker unreachable, retrying" for r in records)
    # the one-line reason it exits with is a log line too (not "Error: ...")
    last = records[-1]
    assert (last["event"], last["level"], last["command"]) == ("cannot run", "error", "worker")
    assert last["reason"].startswith("broker amqp://app:***@127.0.0.1:")
    assert "unreachable after 1s" in last["reason"]


def test_a_receiver_that_cannot_start_says_why_in_json(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = Service(env, "receiver", "--port", str(port))
        try:
            receiver.child.wait(60)
            code = receiver.stop()
        finally:
            receiver.kill()
    assert code == 1
    [record] = assert_all_json_without_secrets(receiver.lines)
    assert (record["event"], record["command"]) == ("cannot run", "receiver")
    assert f"cannot listen on 127.0.0.1:{port}" in record["reason"]


@pytest.mark.usefixtures("isolated_logging")
@pytest.mark.parametrize(("fmt", "json_line"), [("json", True), ("console", False)])
def test_only_a_service_in_json_mode_turns_its_reason_into_a_log_line(
    env: dict[str, str], fmt: str, json_line: bool,
) -> None:
    unreachable = {**env, "ICS_SMS_LOG_FORMAT": fmt, "ICS_SMS_CONNECT_RETRY_S": "0",
                   "ICS_SMS_BROKER_URL": f"amqp://app:{BROKER_PASSWORD}@127.0.0.1:9/"}
    worker = CliRunner().invoke(cli, ["worker"], env=unreachable)
    listing = CliRunner().invoke(cli, ["senders", "show", "nobody"], env=unreachable)
    assert worker.exit_code == listing.exit_code == 1
    [line] = worker.stderr.splitlines()
    if json_line:
        assert orjson.loads(line)["event"] == "cannot run"
    else:
        assert line.startswith("Error: broker amqp://app:***@127.0.0.1:9/ unreachable")
    assert BROKER_PASSWORD not in worker.output
    assert listing.stderr.startswith("Error: no sender named 'nobody'")  # a command, not a service
