"""Message records: the same atomic transitions on Redis and in memory."""

from __future__ import annotations

import pytest

from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import MessageContext
from ics_sms.stores.messages import (
    Claim,
    ClaimResult,
    InMemoryMessageStore,
    MessageStore,
    RedisMessageStore,
    Reopen,
    ReopenResult,
    State,
    Transition,
    TransitionResult,
    fingerprint,
    open_message_store,
)
from tests.stores.conftest import DEADLINE_S, Clock

__all__ = ["DEADLINE_S", "Clock", "claim"]


def claim(i: int, fp: str = "fp", attempt: int = 1) -> Claim:
    return Claim(f"m{i}", fp, attempt,
                 MessageContext(message_id=f"m{i}", campaign_id="c1", sender="otp",
                                metadata={"k": i}), smsgid=f"s{i}")


class TestClaim:
    async def test_first_claim_wins_and_keeps_the_context(self, store: MessageStore) -> None:
        first = await store.claim([claim(1), claim(2)])
        assert [r for r, _ in first] == [ClaimResult.CLAIMED] * 2
        again = await store.claim([claim(1)])
        assert again[0][0] is ClaimResult.WAIT  # the first claim's lease still runs
        record = again[0][1]
        assert record is not None and record.state is State.SENDING
        assert record.context is not None and record.context.metadata == {"k": 1}

    async def test_other_content_with_the_same_id_is_a_duplicate(self, store: MessageStore
                                                                   ) -> None:
        await store.claim([claim(1)])
        assert (await store.claim([claim(1, fp="other")]))[0][0] is ClaimResult.DUPLICATE

    async def test_an_id_is_free_again_once_its_message_ended_past_the_dedupe_window(
            self, store: MessageStore, clock: Clock) -> None:
        """Records are kept for the retention period (30 days), ids only for the dedupe
        window (7 days): an ended message's id may then be used for a new message."""
        await store.claim([claim(1)], token="t")
        await store.apply([Transition("m1", State.DELIVERED, event_id="e1")])
        await store.claim([claim(2)], token="t")  # still on its way after the window
        clock.now += store.window_s - 1
        assert (await store.claim([claim(1, fp="other")]))[0][0] is ClaimResult.DUPLICATE
        assert (await store.claim([claim(1)]))[0][0] is ClaimResult.DONE
        clock.now += 2
        assert store.ttl_s > store.window_s and await store.read(["m1"])  # still kept
        [(result, record)] = await store.claim([claim(1, fp="other")], token="t2")
        assert result is ClaimResult.CLAIMED and record is None
        assert (await store.read(["m1"]))["m1"].state is State.SENDING
        assert (await store.claim([claim(2, fp="other")]))[0][0] is ClaimResult.DUPLICATE

    async def test_released_message_can_be_claimed_again(self, store: MessageStore) -> None:
        await store.claim([claim(1)])
        [applied] = await store.apply([Transition("m1", State.PENDING)])
        assert applied.result is TransitionResult.APPLIED
        [(result, record)] = await store.claim([claim(1, attempt=2)])
        assert result is ClaimResult.CLAIMED and record is None  # nothing to parse
        [(busy, record)] = await store.claim([claim(1, attempt=3)])
        assert busy is ClaimResult.WAIT and record is not None and record.attempt == 2

    async def test_submitted_or_final_is_done(self, store: MessageStore) -> None:
        await store.claim([claim(1), claim(2)])
        await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
                           Transition("m2", State.REJECTED, event_id="e2",
                                      final={"status": "rejected", "error_code": "x"})])
        results = await store.claim([claim(1), claim(2)])
        assert [r for r, _ in results] == [ClaimResult.DONE, ClaimResult.DONE]
        first, second = results[0][1], results[1][1]
        assert first is not None and first.provider_message_id == "mid-1"
        assert second is not None and second.state is State.REJECTED
        assert second.final == {"status": "rejected", "error_code": "x"}


class TestLease:
    async def test_a_claim_never_called_is_claimed_again_after_its_lease(
            self, store: MessageStore, clock: Clock) -> None:
        await store.claim([claim(1)], token="dead-worker", lease_s=30)
        clock.now += 10
        [(wait, record)] = await store.claim([claim(1)], token="b", lease_s=30)
        assert wait is ClaimResult.WAIT and record is not None
        assert record.lease_until == pytest.approx(clock.now + 20)
        clock.now += 21
        [(again, _)] = await store.claim([claim(1, attempt=2)], token="b", lease_s=30)
        assert again is ClaimResult.CLAIMED

    async def test_the_stalled_claimant_finds_its_token_gone(self, store: MessageStore,
                                                             clock: Clock) -> None:
        await store.claim([claim(1)], token="slow", lease_s=30)
        clock.now += 31
        await store.claim([claim(1)], token="fresh", lease_s=30)
        stale, fresh = await store.apply([Transition("m1", State.UNCERTAIN, token="slow"),
                                          Transition("m1", State.UNCERTAIN, token="fresh")])
        assert stale.result is TransitionResult.SKIPPED
        assert fresh.result is TransitionResult.APPLIED

    async def test_a_called_message_is_never_claimed_again(self, store: MessageStore,
                                                           clock: Clock) -> None:
        await store.claim([claim(1)], token="t", lease_s=30)
        await store.apply([Transition("m1", State.UNCERTAIN, token="t")])
        clock.now += 3600
        assert (await store.claim([claim(1)], token="u"))[0][0] is ClaimResult.BUSY

    async def test_only_the_calling_batch_releases_an_uncertain_message(
            self, store: MessageStore) -> None:
        await store.claim([claim(1)], token="t", lease_s=30)
        await store.apply([Transition("m1", State.UNCERTAIN, token="t")])
        other, unfenced, own = await store.apply([
            Transition("m1", State.PENDING, token="u"), Transition("m1", State.PENDING),
            Transition("m1", State.PENDING, token="t")])
        assert [other.result, unfenced.result] == [TransitionResult.SKIPPED] * 2
        assert own.result is TransitionResult.APPLIED
        assert (await store.claim([claim(1)], token="v"))[0][0] is ClaimResult.CLAIMED


class TestTransitions:
    async def test_first_final_wins_and_a_replay_is_recognised(self, store: MessageStore
                                                              ) -> None:
        await store.claim([claim(1)])
        await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1")])
        results = await store.apply([
            Transition("m1", State.DELIVERED, event_id="d"),
            Transition("m1", State.FAILED, event_id="f"),
            Transition("m1", State.DELIVERED, event_id="d"),
        ], records=True)
        assert [a.result for a in results] == [TransitionResult.APPLIED, TransitionResult.LOST,
                                               TransitionResult.REPLAY]
        assert results[0].record is not None
        assert results[0].record.provider_message_id == "mid-1"
        assert results[0].record.context is not None

    async def test_uncertain_only_from_sending(self, store: MessageStore) -> None:
        await store.claim([claim(1)])
        results = await store.apply([Transition("m1", State.UNCERTAIN),
                                     Transition("m1", State.PENDING)])
        assert [a.result for a in results] == [TransitionResult.APPLIED,
                                               TransitionResult.SKIPPED]
        assert (await store.claim([claim(1)]))[0][0] is ClaimResult.BUSY

    async def test_a_receipt_before_submitted_keeps_the_final(self, store: MessageStore
                                                             ) -> None:
        await store.claim([claim(1)])
        await store.apply([Transition("m1", State.DELIVERED, event_id="d")])
        [applied] = await store.apply([Transition("m1", State.SUBMITTED,
                                                  provider_message_id="mid-1")], records=True)
        assert applied.result is TransitionResult.SKIPPED
        assert applied.record is not None and applied.record.state is State.DELIVERED
        assert applied.record.provider_message_id == "mid-1"

    async def test_a_final_for_an_unknown_message_creates_it(self, store: MessageStore) -> None:
        [applied] = await store.apply([Transition("m9", State.DELIVERED, event_id="d")])
        assert applied.result is TransitionResult.APPLIED
        [later] = await store.apply([Transition("m9", State.FAILED, event_id="f")])
        assert later.result is TransitionResult.LOST

    async def test_a_record_a_receipt_created_is_no_duplicate_of_its_message(
            self, store: MessageStore) -> None:
        await store.apply([Transition("m9", State.DELIVERED, event_id="d")])
        [(result, record)] = await store.claim([claim(9)])
        assert result is ClaimResult.DONE  # ended: never sent, and not called a duplicate
        assert record is not None and record.state is State.DELIVERED

    async def test_non_final_transition_of_unknown_message_is_skipped(
            self, store: MessageStore) -> None:
        [applied] = await store.apply([Transition("m9", State.SUBMITTED)], records=True)
        assert applied.result is TransitionResult.SKIPPED and applied.record is None

    async def test_records_come_back_only_when_asked(self, store: MessageStore) -> None:
        await store.claim([claim(1)])
        [applied] = await store.apply([Transition("m1", State.SUBMITTED)])
        assert applied.result is TransitionResult.APPLIED and applied.record is None


class TestRead:
    async def test_read_gives_state_mid_and_context_and_changes_nothing(
            self, store: MessageStore) -> None:
        await store.claim([claim(1), claim(2), claim(3)])
        await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
                           Transition("m2", State.PENDING),
                           Transition("m3", State.FAILED, event_id="e3")])
        found = await store.read(["m1", "m2", "m3", "m4", "m1"])
        assert {m: (r.state, r.provider_message_id) for m, r in found.items()} == {
            "m1": (State.SUBMITTED, "mid-1"), "m2": (State.PENDING, None),
            "m3": (State.FAILED, None)}
        assert found["m1"].context == claim(1).context
        assert await store.read([]) == {}
        [(result, _record)] = await store.claim([claim(2)])
        assert result is ClaimResult.CLAIMED  # still pending: the read changed nothing

    async def test_a_record_a_receipt_created_has_no_context(self, store: MessageStore) -> None:
        await store.apply([Transition("m5", State.DELIVERED, event_id="e5")])
        [record] = (await store.read(["m5"])).values()
        assert (record.state, record.context) == (State.DELIVERED, None)


class TestSweep:
    async def test_waiting_messages_expire_after_the_deadline(self, store: MessageStore,
                                                             clock: Clock) -> None:
        await store.claim([claim(1), claim(2), claim(3), claim(4)])
        await store.apply([Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
                           Transition("m2", State.UNCERTAIN),
                           Transition("m3", State.DELIVERED, event_id="d"),
                           Transition("m4", State.PENDING)])
        assert await store.sweep() == []
        clock.now += DEADLINE_S + 1
        expired = await store.sweep(retry_s=10)
        assert sorted(e.message_id for e in expired) == ["m1", "m2"]
        by_id = {e.message_id: e.record for e in expired}
        assert by_id["m1"].provider_message_id == "mid-1"
        assert by_id["m1"].context is not None and by_id["m1"].context.campaign_id == "c1"
        [late] = await store.apply([Transition("m1", State.DELIVERED, event_id="d")])
        assert late.result is TransitionResult.LOST

    async def test_unconfirmed_expiries_are_offered_again(self, store: MessageStore,
                                                         clock: Clock) -> None:
        await store.claim([claim(1), claim(2)])
        clock.now += DEADLINE_S + 1
        assert len(await store.sweep(retry_s=10)) == 2
        assert await store.sweep(retry_s=10) == []  # another sweeper, within retry_s
        await store.swept(["m1"])
        clock.now += 11
        assert [e.message_id for e in await store.sweep(retry_s=10)] == ["m2"]


def test_fingerprint_is_canonical() -> None:
    a = SendRequest(message_id="m1", campaign_id="c", to="+44 7700 900123", text="hi",
                    metadata={"a": 1, "b": 2})
    b = SendRequest(message_id="m1", campaign_id="c", to="+447700900123", text="hi",
                    metadata={"b": 2, "a": 1})
    c = a.model_copy(update={"text": "hello"})
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_open_picks_memory_or_redis() -> None:
    memory = open_message_store(Settings(redis_url="memory://"))
    assert isinstance(memory, InMemoryMessageStore)
    assert isinstance(open_message_store(Settings()), RedisMessageStore)


# -- reopen (dead-letter replay) --------------------------------------------------------------


def failed(i: int, code: str, status: State = State.FAILED, mid: str | None = None) -> Transition:
    return Transition(f"m{i}", status, provider_message_id=mid, event_id=f"e{i}",
                      final={"status": status.value, "error_code": code, "error": "why"})


class TestReopen:
    async def test_a_message_ics_never_got_is_reopened_for_the_replay_only(
            self, store: MessageStore) -> None:
        await store.claim([claim(1)])
        await store.apply([failed(1, "sender_unauthorized")])
        [(result, record)] = await store.reopen([Reopen("m1", "fp", "fp-replay")])
        assert result is ReopenResult.REOPENED
        assert record is not None and record.state is State.FAILED  # as it was found
        # the dead letter's own publication is now a duplicate; the replay is claimed
        assert (await store.claim([claim(1)]))[0][0] is ClaimResult.DUPLICATE
        [(claimed, _)] = await store.claim([claim(1, fp="fp-replay", attempt=1)])
        assert claimed is ClaimResult.CLAIMED
        # the old final is gone: the replay's own final wins, and a re-emission has none
        [applied] = await store.apply([Transition("m1", State.SUBMITTED,
                                                  provider_message_id="mid-1")], records=True)
        assert applied.record is not None and applied.record.final == {}
        [final] = await store.apply([Transition("m1", State.DELIVERED, event_id="d")])
        assert final.result is TransitionResult.APPLIED

    async def test_replaying_the_same_dead_letter_twice_sends_once(
            self, store: MessageStore) -> None:
        await store.claim([claim(1)])
        await store.apply([failed(1, "retries_exhausted")])
        first = await store.reopen([Reopen("m1", "fp", "r1")])
        # the first replay stopped before removing its dead letter: replayed again while
        # the first replay was not claimed, the record follows the newest replay
        again = await store.reopen([Reopen("m1", "fp", "r2")])
        assert [first[0][0], again[0][0]] == [ReopenResult.REOPENED] * 2
        assert (await store.claim([claim(1, fp="r1")]))[0][0] is ClaimResult.DUPLICATE
        assert (await store.claim([claim(1, fp="r2")]))[0][0] is ClaimResult.CLAIMED
        # once claimed, a third replay of the dead letter finds it on its way
        [(third, record)] = await store.reopen([Reopen("m1", "fp", "r3")])
        assert third is ReopenResult.ACTIVE
        assert record is not None and record.state is State.SENDING

    async def test_never_what_ics_has_or_may_have(self, store: MessageStore,
                                                  clock: Clock) -> None:
        await store.claim([claim(i) for i in range(1, 7)])
        await store.apply([
            Transition("m1", State.SUBMITTED, provider_message_id="mid-1"),
            Transition("m1", State.DELIVERED, event_id="d1"),
            failed(2, "sender_unauthorized", mid="mid-2"),   # a mid: ICS took it
            Transition("m3", State.UNCERTAIN),
            failed(4, "ics_request"),                        # not a code that proves it
            Transition("m5", State.FAILED, event_id="r5"),   # a receipt's final
            failed(6, "", State.EXPIRED),                    # expired before sending
        ])
        clock.now += DEADLINE_S + 1
        await store.sweep()  # m3 ends expired no_receipt: ICS may have it
        results = await store.reopen([Reopen(f"m{i}", "fp", "r") for i in range(1, 7)])
        assert [r for r, _ in results] == [
            ReopenResult.SENT, ReopenResult.SENT, ReopenResult.SENT, ReopenResult.SENT,
            ReopenResult.SENT, ReopenResult.REOPENED]

    async def test_a_duplicate_never_reopens_its_message(self, store: MessageStore) -> None:
        await store.claim([claim(1), claim(2)])
        await store.apply([failed(1, "dlt")])
        results = await store.reopen([Reopen("m1", "fp-of-the-duplicate", "r"),
                                      Reopen("m2", "fp", "r"), Reopen("m9", "fp", "r")])
        assert [r for r, _ in results] == [ReopenResult.OTHER, ReopenResult.ACTIVE,
                                           ReopenResult.MISSING]
        assert (await store.claim([claim(1, fp="r")]))[0][0] is ClaimResult.DUPLICATE
        assert await store.reopen([]) == []
