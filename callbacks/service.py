"""Receipts of one request to confirmed events: one context lookup, one publish."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ics_sms.broker.codec import event_message
from ics_sms.callbacks.publisher import ConfirmingPublisher
from ics_sms.callbacks.receipts import Receipt, to_event
from ics_sms.schemas.topology import Topology
from ics_sms.stores.context import ContextStore, ContextStoreError, MessageContext

__all__ = ["ReceiptService"]

log = structlog.get_logger(__name__)


class ReceiptService:
    """Completes receipts with their message context and publishes them with confirms."""

    def __init__(self, topology: Topology, store: ContextStore,
                 publisher: ConfirmingPublisher) -> None:
        self._topology = topology
        self._store = store
        self._publisher = publisher
        self.published = 0
        self.without_context = 0

    def __repr__(self) -> str:
        return (f"<ReceiptService published={self.published} "
                f"without_context={self.without_context} store={self._store!r}>")

    async def publish(self, sender: str, receipts: Sequence[Receipt]) -> None:
        """Return once every receipt's event is confirmed; raises BrokerError otherwise."""
        if not receipts:
            return
        contexts = await self._contexts(receipts)
        events = [to_event(r, sender, contexts.get(r.message_id)) for r in receipts]
        await self._publisher.publish([event_message(self._topology, e) for e in events])
        self.published += len(events)

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
