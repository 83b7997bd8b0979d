"""Issue 16, "operators see what happened", end to end on real processes.

A campaign is published with ``ics-sms publish`` (which announces its size) to a worker,
the receiver and the ICS sandbox on RabbitMQ and Redis. Its numbers fix every message's
fate: delivered, delivered then clicked (ICS click tracking), failed (DND, code 901),
refused in ICS's answer (``rejected``/``ics_refused``) and accepted without any receipt
(``expired``/``no_receipt`` at a short receipt deadline).

While it runs, ``ics-sms campaigns show ID --json`` is sampled as an operator would: every
sample must add up (its states sum to the messages the workers reached, never more finals
than messages, no final count above what the campaign can end with). At the end the
counts are exact, ``ics-sms campaigns`` lists the campaign, ``ics-sms messages show``
gives the clicked message's whole timeline and ``ics-sms messages find --to`` finds a
number's messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ics_sms.schemas.senders import ClickTracking
from tests.chaos.campaign import TEMPLATE_ID
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, REPO_ROOT, Stack, profiles, wait_for

SIZES = {FAST: 60, "full": 3_000}
DEADLINE_S = 6
FATES = (  # number, final state, error code, clicked
    ("+919000000002", "delivered", "", True),
    ("+919000000901", "failed", "901", False),
    ("+919000000400", "rejected", "ics_refused", False),
    ("+919000000003", "expired", "no_receipt", False),
)


def _cli(stack: Stack, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "ics_sms", *args], env=stack.env(),
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def _write_campaign(path: Path, campaign_id: str, count: int) -> dict[str, tuple[str, str]]:
    """The campaign file, and what each message must end as (state, error code)."""
    expected: dict[str, tuple[str, str]] = {}
    with path.open("w") as f:
        for i in range(count):
            message_id = f"{campaign_id}-{i}"
            if i % 5 < len(FATES):
                to, state, code, _clicked = FATES[i % 5]
            else:
                to, state, code = f"+9198{i:08d}", "delivered", ""
            f.write(json.dumps({
                "message_id": message_id, "campaign_id": campaign_id, "to": to,
                "text": f"ACME: 20% off today https://shop.example.in/sale?i={i}",
                "sender": "chaos-offers", "dlt_template_id": TEMPLATE_ID}) + "\n")
            expected[message_id] = (state, code)
    return expected


class Sampler(threading.Thread):
    """``campaigns show --json`` in a loop, as an operator watching the campaign."""

    def __init__(self, stack: Stack, campaign_id: str) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.campaign_id = campaign_id
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            done = subprocess.run(
                [sys.executable, "-m", "ics_sms", "campaigns", "show", self.campaign_id,
                 "--json"], env=self.stack.env(), capture_output=True, text=True,
                timeout=60, cwd=REPO_ROOT, check=False)
            if done.returncode == 0:
                self.samples.append(json.loads(done.stdout))
            elif "no campaign" not in done.stderr:  # not published yet
                self.errors.append(done.stderr.strip())


@pytest.mark.parametrize("profile", profiles())
def test_campaign_counts_and_timelines_follow_every_message(profile: str,
                                                            make_stack: MakeStack,
                                                            tmp_path: Path) -> None:
    stack = make_stack("what-happened")
    stack.use_senders(click_tracking=ClickTracking.ICS)
    ledger = stack.start_ledger()
    stack.start(workers=1, sandbox=["--click-delay-ms", "200"],
                ICS_SMS_RECEIPT_DEADLINE_S=str(DEADLINE_S))
    campaign_id = f"wh-{profile}"
    count = SIZES[profile]
    expected = _write_campaign(tmp_path / "campaign.jsonl", campaign_id, count)
    want = Counter(state for state, _code in expected.values())
    codes = Counter(code for _state, code in expected.values() if code)
    clicked = sum(1 for i in range(count) if i % 5 == 0)

    sampler = Sampler(stack, campaign_id)
    sampler.start()
    out = _cli(stack, "publish", str(tmp_path / "campaign.jsonl"))
    assert f"published {count} message(s)" in out

    def settled() -> bool:
        last = _cli(stack, "campaigns", "show", campaign_id, "--json")
        return (last["finals"] == count and last["unique_clicks"] == clicked
                and ledger.finished(list(expected)) == count)

    wait_for(settled, timeout_s=120 + count / 10, what="every message final and clicked",
             crashed=stack.crashed)
    sampler.stopped.set()
    sampler.join(timeout=60)

    assert not sampler.errors, sampler.errors[:3]
    assert len(sampler.samples) >= 2, "the campaign was never sampled while it ran"
    for sample in sampler.samples:  # every moment an operator looked, it added up
        states = sample["states"]
        assert sum(states.values()) == sample["reached"] <= count, sample
        assert sample["finals"] <= sample["total"] == count, sample
        assert sample["published"] == count, sample
        for state in ("delivered", "failed", "rejected", "expired"):
            assert states[state] <= want[state], (state, sample)
    assert any(0 < s["finals"] < count for s in sampler.samples) or count <= 100

    final = _cli(stack, "campaigns", "show", campaign_id, "--json")
    assert {s: n for s, n in final["states"].items() if n} == dict(want)
    assert {c["code"]: c["count"] for c in final["failure_codes"]} == dict(codes)
    assert {c["code"]: c["meaning"] for c in final["failure_codes"]}["901"] == "DND"
    assert final["segments"] == count - codes["ics_refused"]  # one segment each, as ICS took
    assert (final["clicks"], final["unique_clicks"]) == (clicked, clicked)
    assert final["progress"] == 1.0 and final["waiting"] == 0
    listed = _cli(stack, "campaigns", "--json")
    assert [c["campaign_id"] for c in listed] == [campaign_id]

    # ledger: the events agree with the counts (one final event per message)
    finals = ledger.finals(list(expected))
    assert all(n == 1 for n in finals.values()) and len(finals) == count

    timeline = _cli(stack, "messages", "show", f"{campaign_id}-0", "--json")
    assert [e["state"] for e in timeline["timeline"]] == [
        "sending", "uncertain", "submitted", "delivered", "clicked"]
    assert timeline["to"] == "+919000000002" and timeline["clicks"] == 1
    assert timeline["provider_message_id"] and timeline["timeline"][2]["note"]
    failed = _cli(stack, "messages", "show", f"{campaign_id}-1", "--json")
    assert failed["timeline"][-1]["state"] == "failed" and failed["timeline"][-1]["note"] == "901"
    expired = _cli(stack, "messages", "show", f"{campaign_id}-3", "--json")
    assert expired["state"] == "expired" and expired["timeline"][-1]["note"] == "no_receipt"
    found = _cli(stack, "messages", "find", "--to", "+919000000400", "--limit", "1000",
                 "--json")
    assert {m["message_id"] for m in found} == {
        m for m, (state, _c) in expected.items() if state == "rejected"}
    text = _cli(stack, "messages", "show", f"{campaign_id}-1")
    assert "901 (DND)" in text
    stack.stop_services()
