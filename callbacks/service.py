"""Receipts of one request to confirmed events: one context lookup, one transition call,
one publish.

Exactly one final status per message: every delivered/failed receipt is applied to the
message's record as a transition *before* its event is published. The first final wins;
a later receipt that contradicts it (or repeats a final under another event id) is still
published, marked ``final: false``, so nothing is hidden and analytics counting finals
never sees two. The same receipt again (same ``event_id``, e.g. ICS retrying after a 503)
is recognised as the final again. Events also take ICS's message id (``mid``) and, when
the context store lacks it, the message's context from the record.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ics_sms.broker.codec import event_message
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.receipts import Receipt, to_event
from ics_sms.schemas.messages import ReceiptEvent
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import ContextStore, ContextStoreError, MessageContext
from ics_sms.stores.messages import (
    Applied,
    MessageStore,
    MessageStoreError,
    State,
    Transition,
    TransitionResult,
)

__all__ = ["ReceiptService"]

log = structlog.get_logger(__name__)


class ReceiptService:
    """Completes receipts with their message context and publishes them with confirms."""

    def __init__(self, topology: Topology, store: ContextStore,
                 publisher: ConfirmingPublisher, messages: MessageStore | None = None) -> None:
        self._topology = topology
        self._store = store
        self._publisher = publisher
        self._messages = messages
        self.published = 0
        self.without_context = 0
        self.not_final = 0

    def __repr__(self) -> str:
        return (f"<ReceiptService published={self.published} "
                f"without_context={self.without_context} store={self._store!r}>")

    async def publish(self, sender: str, receipts: Sequence[Receipt]) -> None:
        """Return once every receipt's event is confirmed; raises BrokerError otherwise."""
        if not receipts:
            return
        contexts = await self._contexts(receipts)
        finals = await self._finals(receipts)
        events = [self._event(r, sender, contexts.get(r.message_id), finals.get(i))
                  for i, r in enumerate(receipts)]
        await self._publisher.publish([event_message(self._topology, e) for e in events])
        self.published += len(events)

    def _event(self, receipt: Receipt, sender: str, context: MessageContext | None,
               applied: Applied | None) -> ReceiptEvent:
        record = applied.record if applied is not None else None
        if context is None and record is not None:
            context = record.context
        event = to_event(receipt, sender, context)
        changes: dict[str, object] = {}
        if record is not None and record.provider_message_id and not event.provider_message_id:
            changes["provider_message_id"] = record.provider_message_id
        if applied is not None and applied.result is TransitionResult.LOST:
            changes["final"] = False
            self.not_final += 1
        return event.model_copy(update=changes) if changes else event

    async def _finals(self, receipts: Sequence[Receipt]) -> dict[int, Applied]:
        """Final receipts applied to their records in one round trip (first final wins)."""
        if self._messages is None:
            return {}
        indexes = [i for i, r in enumerate(receipts) if r.status.terminal]
        transitions = [Transition(receipts[i].message_id, State(receipts[i].status.value),
                                  event_id=receipts[i].event_id) for i in indexes]
        try:
            applied = await self._messages.apply(transitions, records=True)
        except MessageStoreError as exc:
            log.warning("message store unavailable; final receipts published unchecked",
                        reason=str(exc), receipts=len(transitions))
            return {}
        lost = sum(1 for a in applied if a.result is TransitionResult.LOST)
        if lost:
            log.info("receipts after the message's final status, published with final=false",
                     receipts=lost)
        return dict(zip(indexes, applied, strict=True))

    async def _contexts(self, receipts: Sequence[Receipt]) -> dict[str, MessageContext]:
        """Contexts of the batch in one round trip; what is missing is logged, not fatal."""
        try:
            contexts = await self._store.get_many(r.message_id for r in receipts)
        except ContextStoreError as exc:
            log.warning("message context store unavailable, events go out incomplete",
                        reason=str(exc), receipts=len(receipts))
            self.without_context += len(receipts)
            return {}
        missing = sum(1 for r in receipts if r.message_id not in contexts)
        if missing:
            log.warning("receipts without message context, events go out incomplete",
                        missing=missing, receipts=len(receipts))
            self.without_context += missing
        return contexts
