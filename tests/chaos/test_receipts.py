"""Scenario 4: receipts that come twice, late, out of order, replayed, or to a dead receiver.

``test_duplicate_out_of_order_and_replayed_receipts``: the sandbox posts 30 % of its
receipts twice and with up to 1.5 s of jitter (so they overtake each other and often the
worker's ``submitted`` event), clicks included; a relay keeps a copy of every POST, and
once the campaign has settled every captured POST is sent to the receiver again, shuffled.
Expected: every message still has exactly one final status, duplicates carry the event id
of the original (replaying creates no new event id), every replay is answered 200.

``test_receiver_killed_while_ics_posts``: the receiver is killed with SIGKILL while the
sandbox is posting receipts, stays down for ``down_s`` and is started again on the same
port. The sandbox retries every POST that failed; expected: no gap, every delivered or
failed receipt becomes an event (``receipts_failed`` and ``receipts_rejected`` stay 0).
Recovery time = from the restart until every message has its final status.
"""

from __future__ import annotations

import random
import time

import orjson
import pytest

from ics_sms.schemas.senders import ClickTracking
from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, http_request, poll_until, profiles, wait_for
from tests.chaos.relay import ReceiptRelay
from tests.chaos.scenario import finish

REPLAY_SIZES = {FAST: 400, FULL: 10_000}
WORKERS = {FAST: 1, FULL: 2}
KILL_SIZES = {FAST: {"messages": 600, "down_s": 2.0}, FULL: {"messages": 10_000, "down_s": 10.0}}


@pytest.mark.parametrize("profile", profiles())
def test_duplicate_out_of_order_and_replayed_receipts(profile: str,
                                                      make_stack: MakeStack) -> None:
    stack = make_stack("receipts")
    stack.use_senders(click_tracking=ClickTracking.ICS)
    relay = ReceiptRelay(stack.receiver_port)
    stack.cleanups.append(relay.close)
    stack.public_url = relay.url
    ledger = stack.start_ledger()
    stack.start(workers=WORKERS[profile], sandbox=["--duplicate-receipt-ratio", "0.3",
                                    "--receipt-jitter-ms", "1500", "--click-ratio", "0.5",
                                    "--click-delay-ms", "200"])
    campaign = build_campaign(REPLAY_SIZES[profile], f"receipts-{profile}",
                              service="chaos-otp", promotional="chaos-offers", links=True)
    publisher = stack.publisher(campaign, chunk=100)
    started = time.monotonic()
    publisher.start()
    publisher.join(300)
    confirmed = publisher.confirmed_ids()
    settled = stack.settle(confirmed, timeout_s=300)
    assert settled["all_terminal"], stack.diagnostics()

    captured = relay.snapshot()
    with ledger._lock:
        ids_before, events_before = set(ledger.seen), ledger.events
    replayed = captured[:]
    random.Random(7).shuffle(replayed)
    refused = []
    replay_events = 0
    for post in replayed:
        status, answer = http_request(f"http://127.0.0.1:{stack.receiver_port}{post.path}",
                                      "POST", post.body, {"Content-Type": post.content_type})
        if status != 200:
            refused.append(f"replay answered {status}: {answer[:200]!r}")
            continue
        replay_events += int(orjson.loads(answer)["processed"])
    poll_until(lambda: ledger.events >= events_before + replay_events, 60, 0.2)
    with ledger._lock:
        new_ids = ledger.seen - ids_before
        replay_seen = ledger.events - events_before

    problems = [*publisher.errors, *refused[:5]]
    if new_ids:
        problems.append(f"replaying captured receipts created {len(new_ids)} new event ids")
    if replay_seen < replay_events:
        problems.append(f"the replay was answered 200 for {replay_events} receipts but only "
                        f"{replay_seen} events arrived")
    first_answers = {c.status for c in captured}
    row = finish(stack, scenario="receipts: duplicates, order, replay", profile=profile,
                 expected=campaign.expected, confirmed=confirmed, started=started,
                 settle_timeout_s=120, problems=problems,
                 figures={"captured_posts": len(captured), "replayed_receipts": replay_events,
                          "first_answer_statuses": sorted(first_answers),
                          "duplicate_receipt_ratio": 0.3, "receipt_jitter_ms": 1500},
                 duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)


@pytest.mark.parametrize("profile", profiles())
def test_receiver_killed_while_ics_posts(profile: str, make_stack: MakeStack) -> None:
    size = KILL_SIZES[profile]
    stack = make_stack("receiver-kill")
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=WORKERS[profile], sandbox=["--receipt-jitter-ms", "4000",
                                                   "--receipt-retry-cap-ms",
                                    "2000", "--receipt-max-attempts", "40"])
    sandbox = stack.sandbox
    receiver = stack.receiver
    assert sandbox is not None and receiver is not None
    campaign = build_campaign(size["messages"], f"rkill-{profile}", service="chaos-otp",
                              promotional="chaos-offers")
    publisher = stack.publisher(campaign, chunk=200)
    started = time.monotonic()
    publisher.start()
    wanted = len(campaign) * 3 // 10
    wait_for(lambda: sandbox.stats()["receipts_posted"] >= wanted, timeout_s=120,
             what="30% of the receipts posted", crashed=stack.crashed, poll_s=0.05)
    posted_at_kill = sandbox.stats()["receipts_posted"]
    killed_at = receiver.kill()
    noticed_s = wait_for(lambda: sandbox.stats()["receipts_retried"] > 0, timeout_s=30,
                         what="ICS (the sandbox) to notice the dead receiver")
    time.sleep(max(size["down_s"] - (time.monotonic() - killed_at), 0))  # down time
    stack.start_receiver(wait=False)
    restarted_at = time.monotonic()
    stack.wait_receiver_ready()
    publisher.join(300)
    confirmed = publisher.confirmed_ids()
    drained = poll_until(lambda: ledger.finished(confirmed) >= len(confirmed), 300, 0.2)
    recovery_s = time.monotonic() - restarted_at if drained else None
    row = finish(stack, scenario="receipts: receiver kill -9", profile=profile,
                 expected=campaign.expected, confirmed=confirmed, started=started,
                 settle_timeout_s=120, recovery_s=recovery_s, problems=publisher.errors,
                 figures={"down_s": size["down_s"], "posted_before_kill": posted_at_kill,
                          "ics_noticed_s": round(noticed_s, 2)},
                 duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)
