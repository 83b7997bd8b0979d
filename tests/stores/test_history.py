"""What happened: campaign counts, timelines and the phone index, kept by the transitions
themselves, the same on Redis and in memory."""

from __future__ import annotations

from ics_sms.stores.context import MessageContext
from ics_sms.stores.history import CampaignCounts, duration_text, failure_meaning
from ics_sms.stores.messages import (
    Claim,
    MessageStore,
    Reopen,
    ReopenResult,
    State,
    Transition,
)
from tests.stores.conftest import DEADLINE_S, Clock

FINALS = ("delivered", "failed", "rejected", "expired")


def claim(i: int, campaign: str = "camp", to: str = "+919800000001",
          segments: int = 2) -> Claim:
    context = MessageContext(message_id=f"m{i}", campaign_id=campaign, sender="otp",
                             segments=segments)
    return Claim(f"m{i}", f"fp{i}", 1, context, smsgid=f"s{i}", to=to)


def final(i: int, state: State, code: str = "", *, sent: bool = False) -> Transition:
    fields = {"status": state.value, "error_code": code} if code else None
    return Transition(f"m{i}", state, event_id=f"e{i}", final=fields, sent=sent,
                      error_code=code)


def total(counts: CampaignCounts) -> int:
    return sum(counts.states.values())


async def test_a_campaign_counts_every_state_and_never_more_finals_than_messages(
        store: MessageStore, clock: Clock) -> None:
    await store.announce("camp", 4, source="file-a")
    await store.announce("camp", 6, source="file-a")  # published again: not 10
    await store.announce("camp", 0, source="file-a")
    await store.claim([claim(i) for i in range(6)], token="t1")
    counts = await store.campaign("camp")
    assert counts is not None
    assert (counts.published, counts.reached, counts.count("sending")) == (6, 6, 6)
    assert counts.waiting == 6 and counts.finals == 0
    clock.now += 1
    await store.apply([Transition(f"m{i}", State.UNCERTAIN, token="t1") for i in range(5)])
    await store.apply([Transition(f"m{i}", State.SUBMITTED, provider_message_id=f"mid{i}")
                       for i in range(4)])
    await store.apply([Transition("m5", State.PENDING, token="t1")])  # released
    counts = await store.campaign("camp")
    assert counts is not None
    assert dict(counts.states) == {"submitted": 4, "uncertain": 1, "pending": 1}
    assert counts.segments == 8  # 4 messages ICS took, 2 segments each
    assert counts.rate_per_s > 0
    clock.now += 1
    await store.apply([final(0, State.DELIVERED, sent=True),
                       final(1, State.FAILED, "906", sent=True),
                       final(1, State.DELIVERED, sent=True),  # too late: the first final won
                       final(2, State.REJECTED, "ics_refused")])
    counts = await store.campaign("camp")
    assert counts is not None
    assert dict(counts.states) == {"delivered": 1, "failed": 1, "rejected": 1,
                                   "submitted": 1, "uncertain": 1, "pending": 1}
    assert dict(counts.failure_codes) == {"906": 1, "ics_refused": 1}
    assert failure_meaning("906") == "header blocked by DLT"
    clock.now += DEADLINE_S + 1
    expired = await store.sweep()
    assert {e.message_id for e in expired} == {"m3", "m4"}
    counts = await store.campaign("camp")
    assert counts is not None
    assert counts.count("expired") == 2 and counts.failure_codes["no_receipt"] == 2
    assert total(counts) == counts.reached == 6
    assert counts.finals == 5 <= counts.total


async def test_a_receipt_before_the_submitted_answer_counts_the_segments_once(
        store: MessageStore) -> None:
    await store.claim([claim(1, segments=3)], token="t")
    await store.apply([Transition("m1", State.UNCERTAIN, token="t")])
    await store.apply([final(1, State.DELIVERED, sent=True)])
    await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid1")])
    counts = await store.campaign("camp")
    assert counts is not None
    assert counts.segments == 3 and dict(counts.states) == {"delivered": 1}
    view = await store.message("m1")
    assert view is not None and view.provider_message_id == "mid1"


async def test_the_timeline_tells_each_change_with_its_time_and_attempt(
        store: MessageStore, clock: Clock) -> None:
    start = clock.now
    await store.claim([claim(7)], token="t")
    clock.now += 1
    await store.apply([Transition("m7", State.UNCERTAIN, token="t")])
    clock.now += 1
    await store.apply([Transition("m7", State.SUBMITTED, provider_message_id="ics-77")])
    clock.now += 1
    await store.apply([final(7, State.FAILED, "901", sent=True)])
    await store.clicked([("m7", "https://x.example/a|b", "click-1")])
    await store.clicked([("m7", "https://x.example/a|b", "click-1")])  # ICS sent it again
    view = await store.message("m7")
    assert view is not None
    assert (view.state, view.to, view.campaign_id, view.sender) == (
        "failed", "+919800000001", "camp", "otp")
    assert [(e.state, e.at - start) for e in view.timeline] == [
        ("sending", 0), ("uncertain", 1), ("submitted", 2), ("failed", 3), ("clicked", 3)]
    assert view.timeline[2].note == "ics-77" and view.timeline[3].note == "901"
    assert "|" not in view.timeline[4].note and view.clicks == 1
    counts = await store.campaign("camp")
    assert counts is not None and (counts.clicks, counts.unique_clicks) == (1, 1)
    await store.clicked([("m7", "https://x.example/c", "click-2"),
                         ("unknown", "https://x.example/c", "click-3")])
    counts = await store.campaign("camp")
    assert counts is not None and (counts.clicks, counts.unique_clicks) == (2, 1)


async def test_a_phone_number_finds_its_recent_messages_newest_first(
        store: MessageStore, clock: Clock) -> None:
    await store.claim([claim(1, to="+919811111111")], token="t")
    clock.now += 10
    await store.claim([claim(2, to="+919811111111"), claim(3, to="+919822222222")],
                      token="t")
    found = await store.find("+919811111111")
    assert [v.message_id for v in found] == ["m2", "m1"]
    assert [v.message_id for v in await store.find("+919811111111", since=clock.now)] == ["m2"]
    assert await store.find("+919899999999") == []
    assert await store.message("nope") is None and await store.campaign("nope") is None


async def test_published_counts_add_up_over_sources(store: MessageStore) -> None:
    await store.announce("camp", 3, source="file-a")
    await store.announce("camp", 2, source="file-b")
    counts = await store.campaign("camp")
    assert counts is not None and counts.published == 5 and counts.waiting == 5
    assert counts.eta_s is None  # nothing sent yet: no rate, no ETA


async def test_campaigns_are_listed_by_latest_activity(store: MessageStore,
                                                       clock: Clock) -> None:
    await store.claim([claim(1, campaign="old")], token="t")
    clock.now += 5
    await store.claim([claim(2, campaign="new")], token="t")
    assert [c.campaign_id for c in await store.campaigns()] == ["new", "old"]
    clock.now += 5
    await store.apply([Transition("m1", State.UNCERTAIN, token="t")])
    assert [c.campaign_id for c in await store.campaigns(limit=1)] == ["old"]


async def test_a_replay_moves_the_message_back_out_of_its_final_count(
        store: MessageStore) -> None:
    await store.claim([claim(1)], token="t")
    await store.apply([final(1, State.REJECTED, "sender_disabled")])
    [(result, _record)] = await store.reopen([Reopen("m1", "fp1", "fp1-replay")])
    assert result is ReopenResult.REOPENED
    counts = await store.campaign("camp")
    assert counts is not None
    assert dict(counts.states) == {"pending": 1} and not counts.failure_codes
    view = await store.message("m1")
    assert view is not None and view.timeline[-1].note == "replay"
    claimed = await store.claim([Claim("m1", "fp1-replay", 1, claim(1).context, to="+9198")],
                                token="t2")
    assert claimed[0][1] is None
    counts = await store.campaign("camp")
    assert counts is not None and dict(counts.states) == {"sending": 1}
    assert counts.reached == 1


def test_durations_read_as_an_operator_says_them() -> None:
    assert [duration_text(s) for s in (None, 0.4, 42, 185, 7_800)] == [
        "-", "0 s", "42 s", "3 min 5 s", "2 h 10 min"]
    assert duration_text(None, unknown="unknown") == "unknown"


async def test_a_message_ics_took_counts_its_segments_once_whatever_came_first(
        store: MessageStore, clock: Clock) -> None:
    """Segments count once ICS certainly has the message: its answer, its receipt, even
    after the sweeper ended it, and never twice (a receipt again, the answer after it)."""
    await store.claim([claim(1, segments=2), claim(2, segments=3), claim(3, segments=5)],
                      token="t")
    await store.apply([Transition(f"m{i}", State.UNCERTAIN, token="t") for i in (1, 2, 3)])
    clock.now += DEADLINE_S + 1
    assert len(await store.sweep()) == 3  # no answer, no receipt: all three expired
    counts = await store.campaign("camp")
    assert counts is not None and counts.segments == 0
    await store.apply([final(1, State.DELIVERED, sent=True)])  # m1's receipt after all
    await store.apply([final(1, State.DELIVERED, sent=True)])  # ... twice
    await store.apply([Transition("m2", State.SUBMITTED, provider_message_id="mid2")])
    await store.apply([final(2, State.DELIVERED, sent=True)])  # answer, then receipt
    counts = await store.campaign("camp")
    assert counts is not None and counts.segments == 2 + 3
    assert dict(counts.states) == {"expired": 3}  # the first final stays


async def test_an_id_used_again_after_the_dedupe_window_is_found_once(
        store: MessageStore, clock: Clock) -> None:
    await store.claim([claim(1, to="+919811111111")], token="t")
    await store.apply([final(1, State.DELIVERED)])
    clock.now += store.window_s + 1
    await store.claim([Claim("m1", "fp-new", 1, claim(1).context, to="+919811111111")],
                      token="t2")
    assert [v.message_id for v in await store.find("+919811111111")] == ["m1"]
