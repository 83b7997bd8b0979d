"""One rate per sender for the whole fleet: what ICS sees per second from 1 to 8 workers.

A backlog of ``RATE * seconds`` messages of one sender (``rate_per_s = RATE``) waits in
the queue; then 1, 2, 4 or 8 worker processes start and send it to ``ics-sms sandbox``,
which counts the records it accepts in each second (``accepted_per_second`` of
``/_stats``). Every whole second once the whole fleet is up (the first worker starts
sending while the others start), and before the last (which ends with the backlog), must
be within +-5 % of ``RATE``: the fleet shares one schedule in Redis, so more workers do
not mean more traffic. The figures are printed (``-s``) and recorded in the fault
suite's table.

Why the batches are small (``ICS_SMS_BATCH_MAX=5``, 2.5 % of the rate): a batch reaches
ICS in one request, so a second's figure is precise to about one batch; a worker's batch
that crosses a second's boundary moves its 5 records to the next second. With batches of
5 at 200/s that is at most 2.5 % per crossing.

The assertion is the property the issue asks of the limiter, and a per-second figure also
depends on the machine keeping up: on a 2-core machine 8 workers, the sandbox, the
receiver, RabbitMQ and Redis share the cores. So the seconds while worker processes start
are not measured (7 Python processes starting took enough CPU from the first one to make
it miss a second), and the backlog is published before the workers start (publishing
alongside made seconds miss both ways: workers falling behind, then the sandbox counting
late requests in the next second). The machine is shared (RabbitMQ and Redis serve other
work too): when it pauses for a moment, every worker waits, and the records due in that
moment reach ICS in the next second, all at once. Such a *stall* (a short second, then a
long one, together no more than two seconds' worth: the rate was not exceeded) is reported
and excused once per run. Should a second miss otherwise, the row shows which one and the
whole window's rate next to it. ``full`` (``-m chaos``: run it on a quiet machine) runs 1,
2, 4 and 8 workers for 15 s each (about 2 min) and asserts every second. ``fast`` (CI)
runs 2 workers for 6 s of backlog and asserts the window's mean rate only (it prints the
seconds): CI's machine may be busy with other work, and a worker starved of CPU sends less
than its rate in a second, not more (what ICS counts a second late aside).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from typing import Any

import pytest

from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, Stack, profiles, wait_for
from tests.chaos.results import Row, record

RATE = 200
BATCH_MAX = 5
PREFETCH = 40
"""Small, so that the first worker up does not take the whole backlog."""
TOLERANCE = 0.05
SIZES: dict[str, dict[str, Any]] = {
    FAST: {"workers": [2], "seconds": 6},
    FULL: {"workers": [1, 2, 4, 8], "seconds": 15},
}
PACED = "sender paced by its rate_per_s"


def _cases() -> list[Any]:
    return [pytest.param(profile, workers, id=f"{profile}-{workers}w", marks=param.marks)
            for param in profiles(full_timeout_s=600)
            for profile in param.values for workers in SIZES[str(profile)]["workers"]]


def paced_records(log_text: str) -> int:
    """Records a worker's log says waited for the sender's rate."""
    total = 0
    for line in log_text.splitlines():
        if PACED in line:
            try:
                total += int(json.loads(line).get("count", 0))
            except ValueError:
                continue
    return total


def measured(per_second: dict[str, int], *, after: float) -> list[tuple[int, int]]:
    """``(second, records)`` of every whole second of sending once the whole fleet was up
    (``after``, epoch seconds): from the second after the first record (and after
    ``after``) to the one before the last (the backlog ran out in it), gaps as 0."""
    seconds = sorted(int(s) for s in per_second)
    if len(seconds) < 3:
        return []
    counts = Counter({int(s): n for s, n in per_second.items()})
    first = max(seconds[0] + 1, math.ceil(after))
    return [(s, counts[s]) for s in range(first, seconds[-1])]


def stalled(window: list[tuple[int, int]], low: float, high: float) -> set[int]:
    """The seconds of each *stall*: a short second followed by a long one that together
    hold no more than two seconds' worth. The records of the short second reached ICS (or
    were counted) late, all at once: the machine paused, the rate was not exceeded."""
    seconds: set[int] = set()
    for (s, n), (later, m) in itertools.pairwise(window):
        if n < low and m > high and n + m <= 2 * high:
            seconds |= {s, later}
    return seconds


def run(stack: Stack, workers: int, seconds: int, profile: str) -> Row:
    messages = RATE * seconds
    stack.use_senders(rate_per_s=RATE)
    stack.env_overrides.update({"ICS_SMS_BATCH_MAX": str(BATCH_MAX),
                                "ICS_SMS_PREFETCH": str(PREFETCH)})
    stack.declare()
    stack.start(workers=0, sandbox=())
    assert stack.sandbox is not None
    sandbox = stack.sandbox
    campaign = build_campaign(messages, f"rate-{workers}w", service="chaos-otp",
                              promotional=None, fixed_every=0)
    publisher = stack.publisher(campaign, chunk=500)
    publisher.start()
    publisher.join(120)
    started = time.monotonic()
    stack.start_workers(workers, wait=True)
    fleet_up = time.time()
    wait_for(lambda: sandbox.stats()["records_accepted"] >= messages,
             timeout_s=seconds * 3 + 60, what=f"ICS to accept {messages} records",
             crashed=stack.crashed)
    duration_s = time.monotonic() - started
    stats = sandbox.stats()
    window = measured(stats["accepted_per_second"], after=fleet_up)
    low, high = RATE * (1 - TOLERANCE), RATE * (1 + TOLERANCE)
    stalls = stalled(window, low, high)
    off = [(s, n) for s, n in window if not low <= n <= high and s not in stalls]
    total = sum(n for _, n in window)
    paced = [paced_records(w.log_text()) for w in stack.workers()]
    problems = list(publisher.errors)
    if len(window) < seconds // 2:
        problems.append(f"only {len(window)} whole seconds of sending to measure")
    if stats["records_accepted"] != messages:
        problems.append(f"ICS accepted {stats['records_accepted']} records, not {messages}")
    mean = total / len(window) if window else 0.0
    if profile == FULL and off:
        problems.append(f"{len(off)} of {len(window)} seconds outside {low:g}-{high:g}/s: "
                        f"{off}")
    if profile == FULL and len(stalls) > 2:
        problems.append(f"more than one stall: {sorted(stalls)}")
    if not low <= mean <= high:
        problems.append(f"{mean:.1f} records/s over the {len(window)} s window, outside "
                        f"{low:g}-{high:g}/s")
    if not all(paced):
        problems.append(f"a worker was never held by the shared rate: paced records {paced}")
    figures = {"workers": workers, "rate_per_s": RATE, "batch_max": BATCH_MAX,
               "per_second": [n for _, n in window],
               "window_rate_per_s": round(mean, 1),
               "seconds_outside": len(off), "stalled_seconds": sorted(stalls),
               "paced_records_logged_by_worker": paced}
    print(f"\nfleet rate, {workers} worker(s), rate_per_s={RATE}, batch_max={BATCH_MAX}: "
          f"per second {figures['per_second']}, mean {figures['window_rate_per_s']}/s, "
          f"paced records logged per worker {paced}")
    return record(Row(scenario=f"fleet rate {workers} worker(s)", profile=profile,
                      messages=messages, duration_s=round(duration_s, 1), problems=problems,
                      figures=figures))


@pytest.mark.parametrize(("profile", "workers"), _cases())
def test_the_fleet_sends_one_rate_per_sender(profile: str, workers: int,
                                             make_stack: MakeStack) -> None:
    stack = make_stack(f"rate{workers}")
    row = run(stack, workers, SIZES[profile]["seconds"], profile)
    assert row.passed, "\n".join(row.problems)
