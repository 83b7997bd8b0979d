"""Scenario 3: ICS unavailable (5xx, refused connections) or throttling (a 429 storm).

In the middle of a campaign ICS (the sandbox) becomes unusable for ``fault_s`` seconds:

* ``503``: the sandbox answers every ``/datasend`` with 503 (its ``outage_s`` control);
* ``refused``: the workers reach ICS through a proxy that is cut (connections refused);
* ``429``: the sandbox throttles to ``throttle_per_s`` records a second (429 with
  ``Retry-After``), far below the campaign's pace.

Messages wait and go through afterwards; none ends ``failed`` because of it. Messages
published during the fault with an ``expires_at`` before its end must end ``expired``
(never ``failed``).

Worker retry settings: ``ICS_SMS_MAX_ATTEMPTS`` stays at its default (10), backoff base
1 s, ``ICS_SMS_BACKOFF_CAP_S=60`` (default 300, lowered so the backlog drains quickly after
the fault). Delay tiers round a backoff *down* (1/5/15/60/300 s), so with cap 60 the nine
waits before the tenth attempt add up to at least 1+1+1+1+5+15+15+15+15 = 69 s: 30 s of
outage cannot exhaust them. (With the cap at 15 they add up to only 29-33 s, which a 30 s
outage *can* exhaust; see docs/reliability.md.) Recovery time = from the end of the fault
until every message has its final status.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ics_sms.producers.publisher import Producer
from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, poll_until, wait_for
from tests.chaos.scenario import finish

BACKOFF_CAP_S = 60
SIZES = {
    FAST: {"messages": 600, "publish_rate": 150, "fault_s": 3.0, "short_lived": 20},
    FULL: {"messages": 5_000, "publish_rate": 150, "fault_s": 30.0, "short_lived": 100},
}
THROTTLE_PER_S = 20
WORKERS = {FAST: 1, FULL: 2}


def _cases() -> list[object]:
    full = [pytest.mark.chaos, pytest.mark.timeout(1800)]
    return [pytest.param(FAST, "503", id="fast-503"),
            pytest.param(FAST, "429", id="fast-429"),
            pytest.param(FULL, "503", id="full-503", marks=full),
            pytest.param(FULL, "refused", id="full-refused", marks=full),
            pytest.param(FULL, "429", id="full-429", marks=full)]


@pytest.mark.parametrize(("profile", "fault"), _cases())
def test_ics_unavailable_messages_wait_and_go_through(profile: str, fault: str,
                                                      make_stack: MakeStack) -> None:
    size = SIZES[profile]
    fault_s = size["fault_s"]
    stack = make_stack(f"ics-{fault}")
    senders = stack.use_senders()
    stack.env_overrides["ICS_SMS_BACKOFF_CAP_S"] = str(BACKOFF_CAP_S)
    ledger = stack.start_ledger()
    ics_proxy = None
    if fault == "refused":
        ics_proxy = stack.proxy_to("127.0.0.1", stack.sandbox_port)
        stack.ics_url = f"http://127.0.0.1:{ics_proxy.port}"
    stack.start(workers=WORKERS[profile])
    sandbox = stack.sandbox
    assert sandbox is not None
    campaign = build_campaign(size["messages"], f"ics-{fault}-{profile}", service="chaos-otp",
                              promotional="chaos-offers")
    publisher = stack.publisher(campaign, chunk=50, rate_per_s=size["publish_rate"])
    started = time.monotonic()
    publisher.start()
    wait_for(lambda: ledger.progress(campaign.ids) >= len(campaign) // 4, timeout_s=120,
             what="a quarter of the campaign submitted", crashed=stack.crashed)

    if fault == "503":
        sandbox.control(outage_s=fault_s)
    elif fault == "429":
        sandbox.control(throttle_per_s=THROTTLE_PER_S)
    else:
        assert ics_proxy is not None
        ics_proxy.cut()
    fault_at = time.monotonic()

    # Published during the fault, due to expire before it ends: they must end expired.
    expires = datetime.now(UTC) + timedelta(seconds=fault_s / 2)
    allowed = frozenset({"expired", "delivered"}) if fault == "429" else frozenset({"expired"})
    short = build_campaign(size["short_lived"], f"ics-{fault}-{profile}-short",
                           service="chaos-otp", promotional="chaos-offers", fixed_every=0,
                           expires_at=expires)
    short.expected = dict.fromkeys(short.ids, allowed)
    with Producer(stack.rabbitmq_url, stack.topology, senders) as producer:
        producer.publish_many(short.requests)

    time.sleep(max(fault_s - (time.monotonic() - fault_at), 0))  # the fault itself
    if fault == "429":
        sandbox.control(throttle_per_s=0)
    elif fault == "refused":
        assert ics_proxy is not None
        ics_proxy.restore()
    else:
        wait_for(lambda: sandbox.control()["outage_left_s"] == 0, timeout_s=30,
                 what="the sandbox outage to end")
    over_at = time.monotonic()
    publisher.join(300)
    campaign.extend(short)
    confirmed = [*publisher.confirmed_ids(), *short.ids]
    drained = poll_until(lambda: ledger.finished(confirmed) >= len(confirmed), 300, 0.2)
    recovery_s = time.monotonic() - over_at if drained else None

    stats = sandbox.stats()
    figures = {"fault": fault, "fault_s": fault_s, "backoff_cap_s": BACKOFF_CAP_S,
               "max_attempts": 10, "responses": stats["responses"],
               "short_lived": len(short), "fault_started_at_s": round(fault_at - started, 1)}
    if fault == "429":
        figures["throttle_per_s"] = THROTTLE_PER_S
    row = finish(stack, scenario=f"ICS {fault} for {fault_s:g}s", profile=profile,
                 expected=campaign.expected, confirmed=confirmed, started=started,
                 settle_timeout_s=60, recovery_s=recovery_s, figures=figures,
                 problems=publisher.errors, duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)
