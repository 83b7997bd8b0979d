"""Scenario 2: the broker goes away under the producer, the workers and the receiver.

Default: every service process and the producer reach RabbitMQ through a TCP proxy
(``tests/faults.py``) that is cut in the middle of the campaign (every connection dropped,
new ones refused) and restored ``outage_s`` later; RabbitMQ itself keeps running, so other
test runs on the same broker are not disturbed. The ledger reads events on a connection of
its own, straight to RabbitMQ.

With ``ICS_SMS_CHAOS_RESTART_RABBITMQ=1`` (and ``-m chaos``) a second variant really stops
and starts the RabbitMQ application (``rabbitmqctl stop_app`` / ``start_app``) for the same
length: every client of that broker, other test runs included, is disconnected.

Expected: the producer loses no confirmed message (it re-publishes what was unconfirmed;
``message_id`` is the idempotency key); workers and receiver reconnect on their own within
seconds (recovery time = from the restore until the workers consume again, the receiver is
ready again and the producer has its next confirm, whichever is last); meanwhile the
receiver answers receipts with 503 and ICS (the sandbox) sends them again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, Stack, http_request, profiles, wait_for
from tests.chaos.scenario import finish

RESTART_ENV = "ICS_SMS_CHAOS_RESTART_RABBITMQ"
RECOVERY_BOUND_S = 15.0
SIZES = {
    FAST: {"messages": 1_000, "publish_rate": 200, "outage_s": 4.0},
    FULL: {"messages": 20_000, "publish_rate": 800, "outage_s": 15.0},
}


class Outage:
    """How the broker disappears and comes back."""

    name = "proxy"

    def __init__(self, stack: Stack) -> None:
        self.proxy = stack.rabbitmq_proxy()

    def cut(self) -> None:
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()


class RabbitRestart(Outage):
    name = "rabbitmqctl"

    def __init__(self, stack: Stack) -> None:
        ctl = shutil.which("rabbitmqctl")
        assert ctl is not None, "rabbitmqctl is not installed here"
        self.ctl = ctl

    def _run(self, *args: str) -> None:
        subprocess.run([self.ctl, *args], check=True, capture_output=True, timeout=180)

    def cut(self) -> None:
        self._run("stop_app")

    def restore(self) -> None:
        self._run("start_app")
        self._run("await_startup")


def _ready(stack: Stack) -> bool:
    try:
        return http_request(f"http://127.0.0.1:{stack.receiver_port}/readyz",
                            timeout_s=2)[0] == 200
    except OSError:
        return False


def _since(instant: float, check: Callable[[], bool], what: str, timeout_s: float,
           stack: Stack) -> float:
    wait_for(check, timeout_s=timeout_s, what=what, crashed=stack.crashed)
    return time.monotonic() - instant


def run_broker_outage(stack: Stack, profile: str, make_outage: type[Outage]) -> None:
    size = SIZES[profile]
    stack.use_senders()
    ledger = stack.start_ledger()
    outage = make_outage(stack)
    stack.start(workers=2, sandbox=["--receipt-retry-cap-ms", "5000",
                                    "--receipt-max-attempts", "30"])
    campaign = build_campaign(size["messages"], f"broker-{profile}", service="chaos-otp",
                              promotional="chaos-offers")
    ids = campaign.ids
    publisher = stack.publisher(campaign, via=stack.service_broker_url, chunk=100,
                                rate_per_s=size["publish_rate"])
    started = time.monotonic()
    publisher.start()
    # mid-campaign for everyone: the producer is still publishing, the workers are busy
    wait_for(lambda: len(publisher.confirmed_ids()) >= len(ids) * 3 // 10
             and ledger.progress(ids) >= len(ids) // 10, timeout_s=300,
             what="30% of the campaign published and 10% under way", crashed=stack.crashed)

    outage.cut()
    cut_at = time.monotonic()
    during: dict[str, Any] = {
        "published_at_cut": round(len(publisher.confirmed_ids()) / len(ids), 3),
        "progress_at_cut": round(ledger.progress(ids) / len(ids), 3)}
    during["receiver_readyz_503_after_s"] = round(_since(
        cut_at, lambda: not _ready(stack), "the receiver to notice the lost broker",
        30, stack), 2)
    time.sleep(max(size["outage_s"] - (time.monotonic() - cut_at), 0))  # the outage itself
    outage.restore()
    restored_at = time.monotonic()

    recovery = {
        "workers_s": _since(restored_at, lambda: stack.worker_consumers() >= 2,
                            "both workers consuming again", 120, stack),
        "receiver_s": _since(restored_at, lambda: _ready(stack),
                             "the receiver ready again", 120, stack),
    }
    publisher.join(300)
    producer_back = publisher.first_confirm_after(restored_at)
    if producer_back is not None:
        recovery["producer_s"] = producer_back - restored_at
    figures = {**during, "outage_s": size["outage_s"], "fault": outage.name,
               "recovery": {k: round(v, 2) for k, v in recovery.items()},
               "producer_errors": publisher.errors}
    recovery_s = max(recovery.values())
    problems = list(publisher.errors)
    if recovery_s > RECOVERY_BOUND_S:
        problems.append(f"recovery took {recovery_s:.1f}s (bound {RECOVERY_BOUND_S:g}s): "
                        f"{figures['recovery']}")
    if producer_back is None:
        problems.append("the producer confirmed nothing after the restore although it was "
                        "still publishing when the broker went away")
    row = finish(stack, scenario=f"broker outage ({outage.name})", profile=profile,
                 expected=campaign.expected, confirmed=publisher.confirmed_ids(),
                 started=started, settle_timeout_s=300, recovery_s=recovery_s, figures=figures,
                 problems=problems, duplicate_bound=2 * 2000 + 2000)
    assert row.passed, "\n".join(row.problems)


@pytest.mark.parametrize("profile", profiles())
def test_broker_cut_under_producer_workers_and_receiver(profile: str,
                                                        make_stack: MakeStack) -> None:
    run_broker_outage(make_stack("broker"), profile, Outage)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get(RESTART_ENV) != "1",
                    reason=f"stops RabbitMQ for every user of it: set {RESTART_ENV}=1")
def test_rabbitmq_application_restart(make_stack: MakeStack) -> None:
    run_broker_outage(make_stack("restart"), FULL, RabbitRestart)
