"""Scenario 6: no secret in any output, with every service logging at debug.

A campaign runs with ``ICS_SMS_LOG_LEVEL=debug`` everywhere and walks the error paths too:
ICS answering 500 now and then (retries), a sender whose credentials ICS refuses (401:
paused sender, its messages expire), poison messages (dead letters), malformed and forged
receipt requests (including one that makes the receiver log a traceback), and the
commands an operator runs (``senders list/show``, a worker and a receiver that cannot
start). Then every byte the processes wrote (stdout and stderr of each), every event,
every dead letter (body and headers), every HTTP answer and every command output is
searched for:

* each sender's ICS token and the callback secrets (current and previous): anywhere;
* each sender's tracking token (the secret part of the delivery URL, which the receiver
  promises never to log): in the worker and receiver output.

The receiver runs twice: with JSON logs (as in production behind a pipe) and with the
``console`` format (what an operator sees on a terminal).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from ics_sms.schemas.senders import Sender, SenderType
from ics_sms.schemas.smsgid import SmsgidSigner
from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import ENTITY_ID, FAST, FULL, Stack, free_port, profiles, wait_for
from tests.chaos.scenario import finish
from tests.chaos.test_hostile_input import (
    hostile_requests,
    poison_cases,
    publish_raw,
    raw_exchange,
)

SIZES = {FAST: 300, FULL: 10_000}


def _cli(stack: Stack, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``python -m ics_sms ARGS``, capturing its whole output (stdout and stderr)."""
    return subprocess.Popen([sys.executable, "-m", "ics_sms", *args], env=stack.env(**env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("profile", profiles())
def test_no_secret_in_logs_events_dead_letters_or_errors(profile: str,
                                                         make_stack: MakeStack) -> None:
    stack = make_stack("secrets")
    refused = Sender(name="chaos-refused", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMERF",
                     username="chaos-refused", token=SecretStr(secrets.token_urlsafe(18)),
                     dlt_entity_id=ENTITY_ID)
    senders = stack.use_senders(extra=[refused])
    previous = secrets.token_urlsafe(24)
    stack.env_overrides.update({"ICS_SMS_LOG_LEVEL": "debug", "ICS_SMS_SENDER_PAUSE_S": "1",
                                "ICS_SMS_CALLBACK_SECRET_PREVIOUS": previous,
                                "ICS_SMS_BACKOFF_CAP_S": "2", "ICS_SMS_BATCH_MAX": "50"})
    tokens = stack.tokens()
    anywhere = {f"ICS token of {name}": token for name, token in tokens.items()}
    anywhere |= {"callback secret": stack.secret, "previous callback secret": previous}
    tracking = {f"tracking token of {s.name}": s.tracking_token for s in senders}
    ledger = stack.start_ledger(watch={**anywhere, **tracking})
    # ICS knows the two good accounts only: chaos-refused gets 401 (its messages expire)
    accounts = [a for name in ("chaos-otp", "chaos-offers")
                for a in ("--account", f"{name}:{tokens[name]}")]
    stack.start(workers=1 if profile == FAST else 2,
                sandbox=["--no-senders", *accounts, "--error-rate", "0.1"])
    console_port = free_port()
    console = stack.spawn("receiver-console", ["receiver", "--port", str(console_port)],
                          stack.env(ICS_SMS_LOG_FORMAT="console"))

    campaign = build_campaign(SIZES[profile], f"secrets-{profile}", service="chaos-otp",
                              promotional="chaos-offers")
    expiring = build_campaign(20, f"secrets-{profile}-refused", service="chaos-refused",
                              promotional=None, fixed_every=0,
                              expires_at=datetime.now(UTC) + timedelta(seconds=4))
    expiring.expected = dict.fromkeys(expiring.ids, frozenset({"expired"}))
    campaign.extend(expiring)
    publisher = stack.publisher(campaign, chunk=100)
    started = time.monotonic()
    publisher.start()
    poison = [p for p in poison_cases("s") if p.reason is not None][:8]
    publish_raw(stack.rabbitmq_url, stack, [(f"s-{p.name}", p) for p in poison])
    campaign.expected.update({f"s-{p.name}": frozenset({p.event}) for p in poison if p.event})

    sender = senders.get("chaos-otp")
    assert sender is not None
    answers: list[bytes] = []
    forger = SmsgidSigner("not-the-secret")
    wait_for(lambda: console.alive and _listening(console_port), timeout_s=60,
             what="the console-format receiver", crashed=stack.crashed)
    for port in (stack.receiver_port, console_port):
        for _name, request in hostile_requests(sender.tracking_path(), SmsgidSigner(stack.secret),
                                               forger, 256 * 1024):
            answers.append(_raw_answer(port, request))
    publisher.join(300)

    commands = {
        "senders list": _cli(stack, "senders", "list"),
        "senders show": _cli(stack, "senders", "show", "chaos-otp"),
        "worker that cannot start": _cli(stack, "worker", ICS_SMS_BROKER_URL=(
            f"amqp://guest:{stack.secret}@127.0.0.1:{free_port()}/"),
            ICS_SMS_CONNECT_RETRY_S="0"),
        "receiver on a taken port": _cli(stack, "receiver", "--port",
                                         str(stack.receiver_port)),
    }
    outputs = {what: command.communicate(timeout=120)[0] for what, command in commands.items()}
    row = finish(stack, scenario="secrets at debug level", profile=profile,
                 expected=campaign.expected, confirmed=publisher.confirmed_ids(),
                 started=started, settle_timeout_s=120,
                 problems=[*publisher.errors, *_leaks(stack, anywhere, tracking, answers,
                                                      outputs, ledger.secret_hits)],
                 figures={"log_bytes": {k: len(v) for k, v in stack.logs().items()},
                          "secrets_watched": len(anywhere) + len(tracking)},
                 duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)


def _listening(port: int) -> bool:
    try:
        return raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close"
                                  b"\r\n\r\n", timeout_s=2) == 200
    except OSError:
        return False


def _raw_answer(port: int, request: bytes) -> bytes:
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            contextlib.suppress(OSError):  # the answer so far is what is checked
        sock.sendall(request)
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _leaks(stack: Stack, anywhere: dict[str, str], tracking: dict[str, str],
           answers: list[bytes], outputs: dict[str, str], ledger_hits: list[str]) -> list[str]:
    """Where a secret shows up (by name, never the value)."""
    found: list[str] = []
    logs = stack.logs()
    for source, text in logs.items():
        for name, value in anywhere.items():
            if value in text:
                found.append(f"{name} appears in the output of {source}")
        if not source.startswith("sandbox"):  # the sandbox plays ICS, it may log URLs
            for name, value in tracking.items():
                if value in text:
                    found.append(f"{name} appears in the output of {source}")
    for name, value in anywhere.items():
        if any(value.encode() in answer for answer in answers):
            found.append(f"{name} appears in an HTTP answer of the receiver")
        for what, text in outputs.items():
            if value in text:
                found.append(f"{name} appears in the output of `{what}`")
    found += ledger_hits
    return sorted(set(found))
