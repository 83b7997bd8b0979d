"""Receipts of one request to confirmed events: one record read, one transition call, one
publish.

:meth:`ReceiptService.bind` reads the records of a request's receipts in one round trip
(their state, ICS's ``mid`` and the message context the worker stored with the claim) and
refuses what they contradict (:func:`~ics_sms.callbacks.receipts.bind_found`: a ``pending``
record, a clicked URL that is not a link of the message, a legacy smsgid of another
sender). Only messages whose record has no context (records of older workers, or created
by a receipt) are looked up in the context store as well, in one more round trip.
:meth:`~ReceiptService.publish` on receipts that were not bound first (callers that check
links themselves) does the same read and drops what the record state refuses (logged and
counted, but not listed in the answer: it was written already).

Exactly one final status per message: every delivered/failed receipt is applied to the
message's record as a transition *before* its event is published. The first final wins;
a later receipt that contradicts it (or repeats a final under another event id) is still
published, marked ``final: false``, so nothing is hidden and analytics counting finals
never sees two. The same receipt again (same ``event_id``, e.g. ICS retrying after a 503)
is recognised as the final again; a contradiction's ``reason`` names the final status the
message has. Events also take ICS's message id (``mid``) from the record when the receipt
lacks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ics_sms.broker.base import Outgoing
from ics_sms.broker.codec import event_message_from_fields
from ics_sms.callbacks.metrics import REFUSED, WITHOUT_RECORD, refusal_kind
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.receipts import (
    Found,
    ParsedReceipts,
    Receipt,
    bind_found,
    event_fields,
)
from ics_sms.schemas.messages import TERMINAL_STATUSES, Status
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import ContextStore, ContextStoreError, MessageContext
from ics_sms.stores.messages import (
    MessageRecord,
    MessageStore,
    MessageStoreError,
    State,
    Transition,
    TransitionResult,
)

__all__ = ["ReceiptService"]

log = structlog.get_logger(__name__)

_FINAL_STATE = {status: State(status.value) for status in TERMINAL_STATUSES}


class ReceiptService:
    """Checks receipts against their message records, completes them with the message
    context and publishes them with confirms."""

    def __init__(self, topology: Topology, store: ContextStore,
                 publisher: ConfirmingPublisher, messages: MessageStore | None = None) -> None:
        self._topology = topology
        self._store = store
        self._publisher = publisher
        self._messages = messages
        self.published = 0
        self.without_context = 0
        self.without_record = 0
        self.not_final = 0

    def __repr__(self) -> str:
        return (f"<ReceiptService published={self.published} "
                f"without_context={self.without_context} store={self._store!r}>")

    async def bind(self, parsed: ParsedReceipts, sender: str) -> None:
        """Refuse (in place) the receipts their records contradict; one read per request.

        Raises :class:`ContextStoreError` when a receipt that needs its message context
        (a click, a legacy smsgid) cannot be checked because the stores cannot answer: the
        request is answered 503 and ICS sends it again.
        """
        if parsed.receipts:
            found = await self._lookup(parsed.receipts, strict=True)
            bind_found(parsed, sender, found)

    async def publish(self, sender: str, receipts: Sequence[Receipt]) -> None:
        """Return once every receipt's event is confirmed; raises BrokerError otherwise.

        Receipts that did not go through :meth:`bind` (callers that check them with
        :func:`~ics_sms.callbacks.receipts.bind`) get the state check here; those refused
        produce no event (logged, counted in ``ics_sms_receipts_refused``).
        """
        if any(r.found is None for r in receipts):
            receipts = await self._bind_late(sender, receipts)
        if not receipts:
            return
        messages = await self._messages_of(sender, receipts)
        await self._publisher.publish(messages)
        self.published += len(messages)
        await self._count_clicks(receipts)

    async def _count_clicks(self, receipts: Sequence[Receipt]) -> None:
        """Clicks count in their message's record and campaign once their events are
        confirmed (a click ICS reports again is counted once: same event id). Counting is
        best effort: the event is what matters."""
        clicks = [(r.message_id, r.url or "", r.event_id) for r in receipts
                  if r.status is Status.CLICKED]
        if not clicks or self._messages is None:
            return
        try:
            await self._messages.clicked(clicks)
        except MessageStoreError as exc:
            log.warning("message store unavailable; clicks not counted", reason=str(exc),
                        clicks=len(clicks))

    async def _bind_late(self, sender: str, receipts: Sequence[Receipt]) -> list[Receipt]:
        parsed = ParsedReceipts(receipts=[r for r in receipts if r.found is None])
        bind_found(parsed, sender, await self._lookup(parsed.receipts, strict=False),
                   state_only=True)
        if parsed.unprocessed:
            for entry in parsed.unprocessed:
                REFUSED.labels(refusal_kind(str(entry["reason"]))).inc()
            log.warning("receipts refused after they were accepted: no event",
                        refused=len(parsed.unprocessed),
                        first_reason=parsed.unprocessed[0]["reason"])
        return [r for r in receipts if r.found is not None]  # the refused have none

    async def _messages_of(self, sender: str, receipts: Sequence[Receipt]) -> list[Outgoing]:
        event_ids = [r.event_id for r in receipts]
        losers = await self._finals(receipts, event_ids)
        topology = self._topology
        out = []
        for i, receipt in enumerate(receipts):
            found = receipt.found
            context = found.context if found is not None else None
            fields = event_fields(receipt, sender, context, event_ids[i])
            if found is not None and found.provider_message_id \
                    and not receipt.provider_message_id:
                fields["provider_message_id"] = found.provider_message_id
            winner = losers.get(i)
            if winner is not None:
                fields["final"] = False
                fields["reason"] = (f"the message's final status is {winner}" if winner
                                    else "another final status came first")
            out.append(event_message_from_fields(topology, receipt.status, fields))
        return out

    async def _finals(self, receipts: Sequence[Receipt], event_ids: Sequence[str]
                      ) -> dict[int, str]:
        """Final receipts applied to their records in one round trip (first final wins).

        Returns the receipts that lost, each with the final state that won ("" if unknown).
        """
        if self._messages is None:
            return {}
        indexes = [i for i, r in enumerate(receipts) if r.status.terminal]
        if not indexes:
            return {}
        transitions = [Transition(receipts[i].message_id, _FINAL_STATE[receipts[i].status],
                                  event_id=event_ids[i], error_code=receipts[i].error_code or "",
                                  sent=True) for i in indexes]
        try:
            applied = await self._messages.apply(transitions)
        except MessageStoreError as exc:
            log.warning("message store unavailable; final receipts published unchecked",
                        reason=str(exc), receipts=len(transitions))
            return {}
        lost = [i for i, a in zip(indexes, applied, strict=True)
                if a.result is TransitionResult.LOST]
        if not lost:
            return {}
        self.not_final += len(lost)
        log.info("receipts after the message's final status, published with final=false",
                 receipts=len(lost))
        winners = await self._winners([receipts[i] for i in lost])
        return {i: winners.get(receipts[i].message_id, "") for i in lost}

    async def _winners(self, receipts: Sequence[Receipt]) -> dict[str, str]:
        """The final state of the messages these receipts lost to: as read before the
        transition, else read again (a final that came in between; rare)."""
        winners: dict[str, str] = {}
        again = []
        for receipt in receipts:
            state = receipt.found.state if receipt.found is not None else None
            if state is not None and state.final:
                winners[receipt.message_id] = state.value
            else:
                again.append(receipt.message_id)
        if again and self._messages is not None:
            try:
                records = await self._messages.read(again)
            except MessageStoreError:
                records = {}
            winners.update({m: r.state.value for m, r in records.items() if r.state.final})
        return winners

    async def _lookup(self, receipts: Sequence[Receipt], *, strict: bool) -> dict[str, Found]:
        """What the stores know of these receipts' messages: the records in one round trip,
        the context store only for messages whose record has no context.

        With ``strict``, raises ContextStoreError when a receipt that needs its context
        cannot get it because neither store can answer.
        """
        ids = list(dict.fromkeys(r.message_id for r in receipts))
        records: dict[str, MessageRecord] = {}
        if self._messages is not None:
            try:
                records = await self._messages.read(ids)
            except MessageStoreError as exc:
                log.warning("message store unavailable; receipts checked without their "
                            "records", reason=str(exc), receipts=len(receipts))
            else:
                self._count_without_record(len(ids) - len(records))
        found = {m: Found(r.state, r.context, r.provider_message_id)
                 for m, r in records.items()}
        without = [m for m in ids if m not in found or found[m].context is None]
        if without:
            contexts = await self._contexts(without, receipts, strict=strict)
            for message_id, context in contexts.items():
                known = found.get(message_id)
                found[message_id] = (Found(context=context) if known is None
                                     else Found(known.state, context,
                                                known.provider_message_id))
        return found

    def _count_without_record(self, missing: int) -> None:
        """Receipts of messages the store has no record of: accepted (the record may be
        lost, see :mod:`ics_sms.callbacks.receipts`), logged and counted."""
        if missing:
            self.without_record += missing
            WITHOUT_RECORD.inc(missing)
            log.info("receipts of messages without a record", messages=missing)

    async def _contexts(self, ids: list[str], receipts: Sequence[Receipt], *,
                        strict: bool) -> dict[str, MessageContext]:
        """Contexts of the messages without one in their record, in one round trip; what
        is missing is logged, not fatal (unless ``strict`` and a receipt needs it)."""
        try:
            contexts = await self._store.get_many(ids)
        except ContextStoreError as exc:
            wanted = set(ids)
            if strict and any(r.needs_context and r.message_id in wanted for r in receipts):
                raise
            log.warning("message context store unavailable, events go out incomplete",
                        reason=str(exc), receipts=len(ids))
            self.without_context += len(ids)
            return {}
        missing = len(ids) - len(contexts)
        if missing:
            log.warning("receipts without message context, events go out incomplete",
                        missing=missing, receipts=len(receipts))
            self.without_context += missing
        return contexts
