"""Scenario 7: a worker's resident memory stays flat over a long campaign.

One worker process handles the whole campaign (full: 200,000 messages) while its VmRSS is
sampled from ``/proc/<pid>/status`` (every 0.1 s in the fast profile, 0.5 s in the full).
The campaign is published in slices so that the send queue never holds more than
``BACKLOG`` messages (the point is the worker, not a broker full of messages), and every
message is accounted for as in the other scenarios.

Bound: after warm-up (the first quarter of the campaign), the worker's RSS may grow by at
most ``GROWTH_BOUND_MB``: the median of the last samples against the median of the first
ones after warm-up (windows of up to ten samples); the peak is reported too, and the
receiver's RSS alongside.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from ics_sms.producers.publisher import Producer
from ics_sms.schemas.senders import Lane
from tests.chaos.campaign import build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, BrokerProbe, Service, Stack, profiles
from tests.chaos.scenario import finish

SIZES = {FAST: 8_000, FULL: 200_000}
DEADLINE_S = {FAST: 240, FULL: 3_000}
SLICE = 2_000
BACKLOG = 10_000
GROWTH_BOUND_MB = 30.0
WARMUP_SHARE = 0.25
SAMPLE_S = {FAST: 0.1, FULL: 0.5}


class Sampler(threading.Thread):
    """(monotonic time, messages under way, RSS in KiB) of a process, every ``every_s``."""

    def __init__(self, service: Service, progress: list[int], every_s: float) -> None:
        super().__init__(name=f"rss-{service.role}", daemon=True)
        self.service = service
        self.every_s = every_s
        self.progress = progress
        self.samples: list[tuple[float, int, int]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(self.every_s):
            rss = self.service.rss_kb()
            if rss is None:
                return
            self.samples.append((time.monotonic(), self.progress[0], rss))


class SlicedPublisher(threading.Thread):
    """Builds and publishes the campaign slice by slice, keeping the backlog bounded."""

    def __init__(self, stack: Stack, count: int, campaign_id: str) -> None:
        super().__init__(name="chaos-sliced-producer", daemon=True)
        self.stack = stack
        self.count = count
        self.campaign_id = campaign_id
        self.expected: dict[str, frozenset[str]] = {}
        self.confirmed: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        stack = self.stack
        queues = [stack.topology.send_queue(lane) for lane in Lane]
        probe = BrokerProbe(stack.rabbitmq_url)  # a connection of this thread's own
        try:
            with Producer(stack.rabbitmq_url, stack.topology, stack.senders) as producer:
                for start in range(0, self.count, SLICE):
                    while sum(probe.counts(q)[0] for q in queues) > BACKLOG:
                        time.sleep(0.2)  # the worker drains; pacing, not a result wait
                    part = build_campaign(min(SLICE, self.count - start), self.campaign_id,
                                          service="chaos-otp", promotional="chaos-offers",
                                          start=start)
                    producer.publish_many(part.requests)
                    self.expected.update(part.expected)
                    self.confirmed.extend(part.ids)
        except Exception as exc:  # recorded; the scenario reports it
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            probe.close()


@pytest.mark.parametrize("profile", profiles(full_timeout_s=3600))
def test_worker_memory_stays_flat(profile: str, make_stack: MakeStack) -> None:
    count = SIZES[profile]
    stack = make_stack("memory")
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=1)
    worker = stack.workers()[0]
    receiver = stack.receiver
    assert receiver is not None
    publisher = SlicedPublisher(stack, count, f"memory-{profile}")
    progress = [0]
    every_s = SAMPLE_S[profile]
    samplers = [Sampler(worker, progress, every_s), Sampler(receiver, progress, every_s)]
    started = time.monotonic()
    for thread in (publisher, *samplers):
        thread.start()
    deadline = started + DEADLINE_S[profile]
    while time.monotonic() < deadline and worker.alive:
        progress[0] = len(ledger.touched)
        if not publisher.is_alive() and \
                ledger.finished(publisher.confirmed) >= len(publisher.confirmed):
            break
        time.sleep(every_s)  # polling the progress counter (read by the samplers)
    progress[0] = len(ledger.touched)
    for sampler in samplers:
        sampler.stop_flag.set()
        sampler.join(5)
    publisher.join(60)

    worker_mb = _growth(samplers[0].samples, count)
    receiver_mb = _growth(samplers[1].samples, count)
    problems = list(publisher.errors)
    if worker_mb["growth_mb"] is None:
        problems.append("too few RSS samples after warm-up to judge the worker's memory")
    elif worker_mb["growth_mb"] > GROWTH_BOUND_MB:
        problems.append(f"the worker's RSS grew by {worker_mb['growth_mb']:.1f} MB after "
                        f"warm-up (bound {GROWTH_BOUND_MB:g} MB): {worker_mb}")
    row = finish(stack, scenario="worker memory", profile=profile,
                 expected=publisher.expected, confirmed=publisher.confirmed,
                 started=started, settle_timeout_s=600, problems=problems,
                 figures={"worker_rss": worker_mb, "receiver_rss": receiver_mb,
                          "bound_mb": GROWTH_BOUND_MB, "warmup_share": WARMUP_SHARE,
                          "samples": len(samplers[0].samples)},
                 duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)


def _growth(samples: list[tuple[float, int, int]], count: int) -> dict[str, float | None]:
    after = [rss for _t, done, rss in samples if done >= count * WARMUP_SHARE]
    window = max(5, min(10, len(after) // 4))
    if len(after) < 2 * window:
        return {"growth_mb": None, "peak_mb": None, "warm_mb": None, "end_mb": None,
                "start_mb": samples[0][2] / 1024 if samples else None}
    warm = statistics.median(after[:window]) / 1024
    end = statistics.median(after[-window:]) / 1024
    return {"start_mb": round(samples[0][2] / 1024, 1), "warm_mb": round(warm, 1),
            "end_mb": round(end, 1), "peak_mb": round(max(after) / 1024, 1),
            "growth_mb": round(end - warm, 1)}
