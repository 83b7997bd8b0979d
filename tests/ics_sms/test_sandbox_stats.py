"""The sandbox counts the records it accepts in each second: the rate ICS saw."""

from __future__ import annotations

from ics_sms.sandbox.stats import PER_SECOND_KEPT, SandboxStats


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.2

    def __call__(self) -> float:
        return self.now


def test_acceptances_are_counted_per_second_of_the_clock() -> None:
    clock = Clock()
    stats = SandboxStats(clock=clock)
    for smsgid in ("a", "b", "a"):
        stats.count_accepted(smsgid)
    clock.now = 1_002.9
    stats.count_accepted("c")
    counters = stats.as_json(receipts_pending=0)
    assert counters["accepted_per_second"] == {"1000": 3, "1002": 1}
    assert (counters["records_accepted"], counters["duplicate_smsgids"]) == (4, 1)


def test_only_the_latest_seconds_are_kept() -> None:
    clock = Clock()
    stats = SandboxStats(clock=clock)
    for second in range(PER_SECOND_KEPT + 5):
        clock.now = float(second)
        stats.count_accepted(f"m{second}")
    seconds = [int(s) for s in stats.as_json(receipts_pending=0)["accepted_per_second"]]
    assert len(seconds) == PER_SECOND_KEPT
    assert (seconds[0], seconds[-1]) == (5, PER_SECOND_KEPT + 4)
