"""The common end of every campaign scenario: settle, stop, account, record the row."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from tests.chaos.harness import Stack
from tests.chaos.ledger import account
from tests.chaos.results import Row, record

__all__ = ["finish"]


def finish(stack: Stack, *, scenario: str, profile: str,
           expected: Mapping[str, frozenset[str]], confirmed: Collection[str],
           started: float, settle_timeout_s: float, recovery_s: float | None = None,
           figures: Mapping[str, Any] | None = None, problems: Iterable[str] = (),
           duplicate_bound: int | None = None) -> Row:
    """Wait for the campaign to settle, stop every service (SIGTERM), judge and record.

    ``duplicate_bound`` is the most duplicate submissions the scenario may cause.
    """
    assert stack.ledger is not None
    settled = stack.settle(confirmed, timeout_s=settle_timeout_s)
    duration_s = time.monotonic() - started
    stats = stack.sandbox.stats() if stack.sandbox is not None else {}
    stack.stop_services()
    duplicate_sends = int(stats.get("duplicate_smsgids", 0))
    verdict = account(stack.ledger, expected, confirmed, duplicate_sends=duplicate_sends)
    found = [*problems, *verdict.problems]
    if not settled["receipts_posted"]:
        found.append(f"the sandbox still had receipts to post: {stats.get('receipts_pending')}")
    if not settled["queues_empty"]:
        found.append(f"queues not empty or messages unacked at the end: {settled['busy_queues']}")
    for counter in ("receipts_failed", "receipts_rejected"):
        if stats.get(counter):
            found.append(f"sandbox {counter} = {stats[counter]}: receipts the receiver never "
                         "accepted")
    if duplicate_bound is not None and duplicate_sends > duplicate_bound:
        found.append(f"{duplicate_sends} duplicate submissions, more than the bound "
                     f"{duplicate_bound}")
    found += stack.unclean_stops()
    all_figures = {**verdict.figures(), **(figures or {}),
                   "terminal_after_s": settled["terminal_after_s"],
                   "events": stack.ledger.snapshot(),
                   "sandbox": {k: stats.get(k) for k in (
                       "requests", "records_accepted", "records_refused", "responses",
                       "receipts_posted", "receipts_retried", "receipt_posts")}}
    return record(Row(
        scenario=scenario, profile=profile, messages=len(confirmed), lost=len(verdict.lost),
        duplicate_sends=duplicate_sends, duplicate_events=verdict.duplicate_events,
        recovery_s=None if recovery_s is None else round(recovery_s, 2),
        duration_s=round(duration_s, 1), problems=found, figures=all_figures))
