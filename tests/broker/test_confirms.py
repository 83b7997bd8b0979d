"""ConfirmTracker: the one publisher-confirm bookkeeping of the producer and AmqpBroker.

Pure: every test plays the broker's acks, nacks and returns by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ics_sms.broker.confirms import NACKED, ConfirmTracker


@dataclass(frozen=True)
class Item:
    message_id: str | None
    routing_key: str = "service"


def tracker_of(count: int) -> ConfirmTracker[Item]:
    tracker: ConfirmTracker[Item] = ConfirmTracker()
    tracker.sent(Item(f"m-{i}") for i in range(1, count + 1))
    return tracker


# -- the prefix the producer reports --------------------------------------------------------
def test_sent_returns_the_delivery_tags_of_the_items() -> None:
    tracker: ConfirmTracker[Item] = ConfirmTracker()
    assert tracker.sent([Item("a"), Item("b")]) == range(1, 3)
    assert tracker.sent([Item("c")]) == range(3, 4)
    assert tracker.next_tag == 4 and len(tracker) == 3


def test_multiple_ack_confirms_the_prefix() -> None:
    tracker = tracker_of(5)
    tracker.on_ack(3, multiple=True)
    assert tracker.take_confirmed() == 3
    assert len(tracker) == 2 and tracker.next_tag == 6
    tracker.on_ack(5, multiple=True)
    assert tracker.take_confirmed() == 2 and tracker.settled


def test_a_multiple_ack_of_tag_zero_confirms_everything() -> None:
    tracker = tracker_of(4)
    tracker.on_ack(0, multiple=True)
    assert tracker.take_confirmed() == 4 and tracker.settled


def test_out_of_order_singles_count_only_once_the_gap_closes() -> None:
    tracker = tracker_of(4)
    tracker.on_ack(2, multiple=False)
    tracker.on_ack(4, multiple=False)
    assert tracker.take_confirmed() == 0
    tracker.on_ack(1, multiple=False)
    assert tracker.take_confirmed() == 2
    tracker.on_ack(3, multiple=False)
    assert tracker.take_confirmed() == 2 and tracker.settled


def test_a_multiple_ack_after_out_of_order_singles_counts_each_once() -> None:
    tracker = tracker_of(6)
    tracker.on_ack(5, multiple=False)
    tracker.on_ack(3, multiple=False)
    tracker.on_ack(4, multiple=True)
    assert tracker.take_confirmed() == 5 and len(tracker) == 1
    tracker.on_ack(6, multiple=False)
    assert tracker.take_confirmed() == 1 and tracker.settled


def test_a_nack_stops_the_prefix_even_when_later_tags_are_acked() -> None:
    tracker = tracker_of(5)
    tracker.on_nack(3, multiple=False)
    tracker.on_ack(5, multiple=True)
    assert tracker.take_confirmed() == 2
    failure = tracker.failure
    assert failure is not None and failure.tag == 3 and failure.reason == NACKED
    assert tracker.settled


def test_a_multiple_nack_fails_every_unsettled_tag_up_to_it() -> None:
    tracker = tracker_of(4)
    tracker.on_ack(2, multiple=False)
    tracker.on_nack(3, multiple=True)
    assert tracker.is_settled(range(1, 4)) and not tracker.is_settled(range(1, 5))
    assert tracker.release(range(1, 2)) == NACKED
    assert tracker.release(range(2, 3)) is None  # acked before the nack
    assert tracker.release(range(3, 4)) == NACKED


def test_the_failure_waits_for_the_tags_before_it() -> None:
    tracker = tracker_of(3)
    tracker.on_nack(2, multiple=False)
    assert not tracker.settled
    tracker.on_ack(1, multiple=False)
    assert tracker.settled and tracker.take_confirmed() == 1


def test_a_returned_message_is_a_failure_although_acked_after() -> None:
    tracker = tracker_of(3)
    tracker.on_return("m-2", "service", "unroutable")
    tracker.on_ack(3, multiple=True)
    assert tracker.take_confirmed() == 1
    assert tracker.failure is not None and tracker.failure.tag == 2


def test_returns_of_a_repeated_id_fail_its_copies_in_order() -> None:
    tracker: ConfirmTracker[Item] = ConfirmTracker()
    tracker.sent([Item("x"), Item("x", "events"), Item("x")])
    tracker.on_return("x", "service", "first")
    tracker.on_return("x", "service", "second")
    tracker.on_ack(3, multiple=True)
    assert [tracker.release(range(t, t + 1)) for t in (1, 2, 3)] == ["first", None, "second"]


def test_a_return_without_message_id_fails_the_next_confirm() -> None:
    tracker: ConfirmTracker[Item] = ConfirmTracker()
    tracker.sent([Item(None), Item(None), Item(None)])
    tracker.on_ack(1, multiple=False)
    tracker.on_return(None, "service", "unroutable")
    tracker.on_ack(2, multiple=False)
    tracker.on_ack(3, multiple=False)
    assert tracker.release(range(1, 2)) is None
    assert tracker.release(range(2, 3)) == "unroutable"
    assert tracker.release(range(3, 4)) is None


def test_stale_and_unknown_acks_are_ignored() -> None:
    tracker = tracker_of(2)
    tracker.on_ack(2, multiple=True)
    tracker.on_ack(2, multiple=True)
    tracker.on_ack(9, multiple=False)
    tracker.on_nack(9, multiple=True)
    assert tracker.take_confirmed() == 2 and tracker.failure is None


def test_reset_gives_back_the_unsettled_in_order() -> None:
    tracker = tracker_of(4)
    tracker.on_ack(1, multiple=False)
    tracker.on_ack(3, multiple=False)
    tracker.on_return("m-4", "service", "unroutable")
    assert [i.message_id for i in tracker.reset()] == ["m-2", "m-3", "m-4"]
    assert len(tracker) == 0 and tracker.next_tag == 1 and tracker.failure is None


# -- windows, as AmqpBroker resolves its publish calls ------------------------------------
def test_a_window_is_settled_when_every_tag_of_it_is() -> None:
    tracker = tracker_of(2)
    first = range(1, 3)
    second = tracker.sent([Item("m-3"), Item("m-4")])
    tracker.on_ack(4, multiple=False)
    tracker.on_ack(3, multiple=False)
    assert tracker.is_settled(second) and not tracker.is_settled(first)
    tracker.on_ack(2, multiple=True)
    assert tracker.is_settled(first) and len(tracker) == 0


def test_a_failed_window_does_not_fail_the_next_one() -> None:
    tracker = tracker_of(2)
    first = range(1, 3)
    second = tracker.sent([Item("m-3")])
    tracker.on_nack(2, multiple=False)
    tracker.on_ack(3, multiple=True)
    assert tracker.release(first) == NACKED
    assert tracker.release(second) is None
    assert tracker.failure is None


@pytest.mark.parametrize("order", [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [2, 4, 1, 5, 3]])
def test_single_acks_in_any_order_settle_everything(order: list[int]) -> None:
    tracker = tracker_of(5)
    for tag in order:
        tracker.on_ack(tag, multiple=False)
    assert tracker.take_confirmed() == 5 and len(tracker) == 0 and tracker.settled
