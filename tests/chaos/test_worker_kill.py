"""Scenario 1: ``kill -9`` of a worker in the middle of a campaign, three times.

Two worker processes consume; at 25 %, 50 % and 75 % of the campaign the oldest running
worker is killed with SIGKILL and a replacement started. Whatever the killed worker held
unacked goes back to the queue and is done again by the others, except what the killed
worker had handed to ICS (``uncertain`` in the message store): that is never sent again,
so no SMS is sent twice and every message has exactly one final event. A batch the worker
had claimed but not yet sent is claimed again once its lease ends (short here) and sent.
A batch whose request was on its way when the worker died is ``uncertain``: what ICS did
not take ends ``expired``/``no_receipt`` at the receipt deadline (short here), visibly
(the sandbox's latency delays its acceptance, so a kill in those 100 ms leaves some).

Pacing: the senders allow ``rate_per_s`` per worker (batches of 50), so the campaign lasts
long enough for three kills and three replacements; the sandbox answers after 100 ms, so
every kill lands on batches in flight at ICS.
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, profiles, wait_for
from tests.chaos.scenario import finish

KILLS = 3
PREFETCH = 500
RECEIPT_DEADLINE_S = 20
CLAIM_LEASE_S = 5
SIZES = {
    FAST: {"messages": 900, "rate_per_s": 30},
    FULL: {"messages": 20_000, "rate_per_s": 150},
}


@pytest.mark.parametrize("profile", profiles())
def test_kill_9_of_a_worker_three_times_loses_nothing(profile: str,
                                                      make_stack: MakeStack) -> None:
    size = SIZES[profile]
    stack = make_stack("kill")
    stack.use_senders(rate_per_s=size["rate_per_s"])
    stack.env_overrides.update({"ICS_SMS_PREFETCH": str(PREFETCH), "ICS_SMS_BATCH_MAX": "50",
                                "ICS_SMS_RECEIPT_DEADLINE_S": str(RECEIPT_DEADLINE_S),
                                "ICS_SMS_CLAIM_LEASE_S": str(CLAIM_LEASE_S)})
    ledger = stack.start_ledger()
    stack.start(workers=2, sandbox=["--latency-ms", "100"])
    campaign = build_campaign(size["messages"], f"kill-{profile}", service="chaos-otp",
                              promotional="chaos-offers", service_every=2)
    ids = campaign.ids
    publisher = stack.publisher(campaign, chunk=500)
    started = time.monotonic()
    publisher.start()

    kills: list[dict[str, float]] = []
    for number in range(1, KILLS + 1):
        threshold = len(ids) * number // (KILLS + 1)
        wait_for(lambda t=threshold: ledger.progress(ids) >= t, timeout_s=300,
                 what=f"{threshold} messages under way", crashed=stack.crashed)
        victim = stack.workers()[0]
        killed_at = victim.kill()
        dropped_s = wait_for(lambda: stack.worker_consumers() <= 1, timeout_s=30,
                             what="the broker to drop the killed worker's consumer")
        stack.start_workers(1, wait=False)
        stack.wait_workers(2)
        kills.append({"at_progress": ledger.progress(ids) / len(ids),
                      "consumer_dropped_s": round(dropped_s, 2),
                      "replacement_consuming_s": round(time.monotonic() - killed_at, 2)})
    publisher.join(300)

    row = finish(stack, scenario="worker kill -9 x3", profile=profile, expected=campaign.expected,
                 confirmed=publisher.confirmed_ids(), started=started, settle_timeout_s=300,
                 recovery_s=max(k["replacement_consuming_s"] for k in kills),
                 figures={"kills": kills, "prefetch": PREFETCH, "batch_max": 50},
                 problems=publisher.errors, duplicate_bound=0, effectively_once=True,
                 uncertain_may_expire=True)
    assert row.passed, "\n".join(row.problems)
