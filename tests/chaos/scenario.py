"""The common end of every campaign scenario: settle, stop, account, record the row."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ics_sms.stores.history import CampaignCounts
from ics_sms.stores.messages import RedisMessageStore
from tests.chaos.harness import Stack
from tests.chaos.ledger import Ledger, account
from tests.chaos.results import Row, record

__all__ = ["Once", "campaign_counts", "finish", "once_figures", "sms_per_message"]

_FINALS = ("delivered", "failed", "rejected", "expired")


def campaign_counts(stack: Stack, ledger: Ledger, ids: Collection[str]
                    ) -> tuple[dict[str, dict[str, int]], list[str]]:
    """What ``ics-sms campaigns`` shows for the scenario's campaigns (those of the records
    of ``ids``), checked against the events: each campaign's states add up to the
    messages the workers reached, its final counts equal the final events' statuses (when
    every message has one final event), and it never shows more finals than messages.
    Returns the counts and the problems found."""
    store = RedisMessageStore(stack.redis_url, prefix=f"ics-sms:{stack.namespace}msg:")
    by_campaign: dict[str, list[str]] = {}

    async def read() -> dict[str, CampaignCounts | None]:
        try:
            wanted = sorted(set(ids))
            for start in range(0, len(wanted), 1000):
                records = await store.read(wanted[start:start + 1000])
                for message_id, found in records.items():
                    if found.context is not None and found.context.campaign_id:
                        by_campaign.setdefault(found.context.campaign_id, []).append(message_id)
            return {c: await store.campaign(c) for c in by_campaign}
        finally:
            await store.close()

    counts = asyncio.run(read())
    problems: list[str] = []
    shown: dict[str, dict[str, int]] = {}
    for campaign_id, members in sorted(by_campaign.items()):
        found = counts[campaign_id]
        if found is None:
            problems.append(f"campaign {campaign_id}: no counts in the message store")
            continue
        shown[campaign_id] = {**found.states, "reached": found.reached}
        if sum(found.states.values()) != found.reached or min(found.states.values(),
                                                               default=0) < 0:
            problems.append(f"campaign {campaign_id}: states {dict(found.states)} do not add "
                            f"up to the {found.reached} messages reached")
        if found.finals > len(members):
            problems.append(f"campaign {campaign_id}: {found.finals} finals for "
                            f"{len(members)} messages")
        events = Counter(next(iter(t.values())) for m in members
                         if len(t := ledger.terminal_of(m)) == 1)
        several = sum(1 for m in members if len(ledger.terminal_of(m)) > 1)
        for state in _FINALS:
            if several == 0 and found.count(state) != events[state]:
                problems.append(f"campaign {campaign_id}: {found.count(state)} {state} "
                                f"counted, {events[state]} by the final events")
    return shown, problems


def sms_per_message(accepted: Mapping[str, int], ids: Collection[str]
                    ) -> tuple[Counter[str], int]:
    """SMS ICS accepted per message_id (an smsgid is ``<message_id>.<mac>`` or the
    message_id itself), and the acceptances of smsgids that name no planned message."""
    known = set(ids)
    per_message: Counter[str] = Counter()
    strangers = 0
    for smsgid, count in accepted.items():
        candidates = (smsgid, smsgid.rpartition(".")[0], smsgid.partition(".")[0])
        message_id = next((c for c in candidates if c in known), None)
        if message_id is None:
            strangers += count
        else:
            per_message[message_id] += count
    return per_message, strangers


@dataclass
class Once:
    """The effectively-once figures of a campaign (issue 13)."""

    duplicate_sms: int = 0
    sent_more_than_once: int = 0
    most_sms_of_one_message: int = 0
    stranger_sms: int = 0
    several_finals: int = 0
    most_finals_of_one_message: int = 0
    duplicate_publishes_refused: int = 0
    bare_dead_letters: int = 0
    examples: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        if self.duplicate_sms:
            found.append(f"{self.duplicate_sms} duplicate SMS: {self.sent_more_than_once} "
                         f"messages accepted by ICS more than once (up to "
                         f"{self.most_sms_of_one_message} times), e.g. "
                         f"{self.examples.get('sent_more_than_once')}")
        if self.several_finals:
            found.append(f"{self.several_finals} messages have more than one final event (up "
                         f"to {self.most_finals_of_one_message}), e.g. "
                         f"{self.examples.get('several_finals')}")
        if self.bare_dead_letters:
            found.append(f"{self.bare_dead_letters} dead letters of messages with no final "
                         "event")
        return found


def once_figures(accepted: Mapping[str, int], ledger: Ledger, ids: Collection[str]) -> Once:
    """Count duplicate SMS (the sandbox's acceptances per smsgid, ``accepted``) and final
    events per message (what the ledger has read)."""
    unique = list(dict.fromkeys(ids))
    per_message, strangers = sms_per_message(accepted, unique)
    again = {m: n for m, n in per_message.items() if n > 1}
    finals = ledger.finals(unique)
    several = {m: n for m, n in finals.items() if n > 1}
    dead = {d.message_id for d in ledger.dead_letters()}
    with ledger._lock:
        refused = ledger.duplicate_refusals.total()
    return Once(
        duplicate_sms=sum(n - 1 for n in again.values()), sent_more_than_once=len(again),
        most_sms_of_one_message=max(per_message.values(), default=0), stranger_sms=strangers,
        several_finals=len(several), most_finals_of_one_message=max(finals.values(), default=0),
        duplicate_publishes_refused=refused,
        bare_dead_letters=sum(1 for m in dead if m in finals and not finals[m]),
        examples={"sent_more_than_once": sorted(again)[:3], "several_finals": sorted(several)[:3]})


def finish(stack: Stack, *, scenario: str, profile: str,
           expected: Mapping[str, frozenset[str]], confirmed: Collection[str],
           started: float, settle_timeout_s: float, recovery_s: float | None = None,
           figures: Mapping[str, Any] | None = None, problems: Iterable[str] = (),
           duplicate_bound: int | None = None, effectively_once: bool = False,
           uncertain_may_expire: bool = False) -> Row:
    """Wait for the campaign to settle, stop every service (SIGTERM), judge and record.

    ``duplicate_bound`` is the most duplicate submissions the scenario may cause;
    ``effectively_once`` demands what issue 13 promises: no duplicate SMS and no message
    with more than one final event (figures recorded either way). ``uncertain_may_expire``:
    a message ICS never accepted may end ``expired``/``no_receipt`` (its worker was killed
    while its request was on the way: the message was ``uncertain``, so it is never sent
    again, and with no receipt it ends at the receipt deadline, visibly); one ICS accepted
    may not.
    """
    assert stack.ledger is not None
    settled = stack.settle(confirmed, timeout_s=settle_timeout_s)
    duration_s = time.monotonic() - started
    stats = stack.sandbox.stats() if stack.sandbox is not None else {}
    accepted = stack.sandbox.accepted_by_smsgid() if stack.sandbox is not None else {}
    stack.stop_services()
    stack.drain_events()
    once = once_figures(accepted, stack.ledger, confirmed)
    killed_mid_request: list[str] = []
    if uncertain_may_expire:
        sent, _strangers = sms_per_message(accepted, confirmed)
        with stack.ledger._lock:
            swept = set(stack.ledger.no_receipt)
        killed_mid_request = sorted(m for m in swept if not sent.get(m))
        expected = {m: a | {"expired"} if m in killed_mid_request else a
                    for m, a in expected.items()}
    duplicate_sends = int(stats.get("duplicate_smsgids", 0))
    verdict = account(stack.ledger, expected, confirmed, duplicate_sends=duplicate_sends)
    found = [*problems, *verdict.problems]
    if effectively_once:
        found = [*once.problems(), *found]
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
    counted, campaign_problems = campaign_counts(stack, stack.ledger, confirmed)
    found += campaign_problems
    all_figures = {**verdict.figures(), **(figures or {}),
                   "terminal_after_s": settled["terminal_after_s"],
                   "events": stack.ledger.snapshot(),
                   "sandbox": {k: stats.get(k) for k in (
                       "requests", "records_accepted", "records_refused", "responses",
                       "receipts_posted", "receipts_retried", "receipt_posts",
                       "answer_faults", "requests_poisoned")},
                   "once": {k: v for k, v in vars(once).items() if k != "examples"},
                   "expired_no_receipt": len(stack.ledger.no_receipt),
                   "uncertain_never_accepted_expired": len(killed_mid_request),
                   "campaign_counts": counted}
    return record(Row(
        scenario=scenario, profile=profile, messages=len(set(confirmed)),
        lost=len(verdict.lost), duplicate_sends=duplicate_sends,
        duplicate_events=verdict.duplicate_events, duplicate_sms=once.duplicate_sms,
        several_finals=once.several_finals,
        recovery_s=None if recovery_s is None else round(recovery_s, 2),
        duration_s=round(duration_s, 1), problems=found, figures=all_figures))
