"""``ics-sms receiver`` as a process follows its senders file: a sender added while it runs
is served, a broken edit is one error and changes nothing, SIGTERM still stops it cleanly.

The embedded broker (``memory://``) keeps this test free of RabbitMQ: the receiver only
needs a broker that confirms.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import urllib3

from ics_sms.schemas.senders import Sender, Senders, SenderType, save_senders
from ics_sms.schemas.smsgid import SmsgidSigner
from tests.ics_sms.test_receiver_cmd import SENDER, Process, free_port

SECRET = "receiver-live-secret-of-at-least-32-bytes"
BETA = Sender(name="beta", type=SenderType.TRANSACTIONAL, sender_id="BETASS",
              username="beta", token="not-a-real-ics-token-beta")


@pytest.fixture
def senders_file(tmp_path: Path) -> Path:
    path = tmp_path / "senders.toml"
    save_senders(path, Senders().add(SENDER))
    return path


@pytest.fixture
def process(senders_file: Path) -> Iterator[Process]:
    running = Process({
        "ICS_SMS_BROKER_URL": "memory://",
        "ICS_SMS_SENDERS_FILE": str(senders_file),
        "ICS_SMS_SENDERS_RELOAD_S": "0.2",
        "ICS_SMS_CALLBACK_SECRET": SECRET,
        "ICS_SMS_REDIS_URL": "memory://",
        "ICS_SMS_RECEIVER_METRICS_PORT": str(free_port()),
    })
    yield running
    running.stop()


def post_receipt(port: int, sender: Sender, message_id: str) -> int:
    smsgid = SmsgidSigner(SECRET).sign(message_id, sender.name)
    body = orjson.dumps([{"event": "delivered", "data": [{"ts": 1764230400, "meta": smsgid}]}])
    response = urllib3.request("POST", f"http://127.0.0.1:{port}{sender.tracking_path()}",
                               body=body, headers={"Content-Type": "application/json"})
    return response.status


def test_a_sender_added_while_running_is_served(process: Process, senders_file: Path) -> None:
    port = int(str(process.wait_for("receiver listening")["port"]))
    assert post_receipt(port, BETA, "m-1") == 404

    save_senders(senders_file, Senders().add(SENDER).add(BETA))
    changed = process.wait_for("senders changed")
    assert changed["added"] == ["beta"]
    assert post_receipt(port, BETA, "m-1") == 200

    senders_file.write_text("[senders.beta\n")
    broken = process.wait_for("senders configuration cannot be used, keeping the last good one")
    assert str(senders_file) in str(broken["reason"])
    assert post_receipt(port, BETA, "m-2") == 200

    process.child.send_signal(signal.SIGTERM)
    process.wait_for("receiver stopped")
    assert process.child.wait(30) == 0
    for secret in (SENDER.tracking_token, BETA.tracking_token, "not-a-real-ics-token"):
        assert secret not in str(process.seen)
    unknown = [line for line in process.seen
               if line.get("event") == "receipts on a tracking URL of no sender"]
    assert len(unknown) == 1
