"""Every message ends: messages still waiting for a final receipt at their deadline end
``expired`` with ``error_code=no_receipt``.

Every worker runs a :class:`Sweeper`; many at once are safe because the store's transition
decides which sweep ends a message (the others see it ended). The expiry is recorded first,
then its event is published with confirms, then the store stops offering it; an event that
was not confirmed is offered again (the same ``event_id``) after ``retry_s``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from ics_sms.broker.base import Broker, BrokerError, ConnectionLost, Outgoing
from ics_sms.broker.codec import event_message_from_fields
from ics_sms.schemas.messages import Status, make_event_id
from ics_sms.schemas.topology import Topology
from ics_sms.stores.messages import (
    Expired,
    MessageStore,
    MessageStoreError,
    State,
    count_finals,
)

__all__ = ["NO_RECEIPT", "Sweeper", "sweep_interval_s"]

log = structlog.get_logger(__name__)

NO_RECEIPT = "no_receipt"
_ERROR = "no final receipt from ICS before the receipt deadline"


def sweep_interval_s(receipt_deadline_s: float) -> float:
    """How often to look for due deadlines: a tenth of the deadline, 0.2 s to 30 s."""
    return min(max(receipt_deadline_s / 10, 0.2), 30.0)


class Sweeper:
    """Ends overdue messages and publishes their ``expired`` events."""

    def __init__(self, store: MessageStore, broker: Broker, topology: Topology, *,
                 interval_s: float, batch: int = 500) -> None:
        self._store = store
        self._broker = broker
        self._topology = topology
        self._interval_s = interval_s
        self._batch = batch
        self.expired = 0

    def __repr__(self) -> str:
        return f"<Sweeper every={self._interval_s:g}s expired={self.expired}>"

    async def run(self) -> None:
        """Sweep until cancelled; a store or broker failure waits for the next round."""
        while True:
            try:
                while await self.sweep_once() >= self._batch:
                    pass
            except ConnectionLost:
                return
            except (MessageStoreError, BrokerError) as exc:
                log.warning("sweeping receipt deadlines failed; trying again", error=str(exc))
            except Exception:  # a bug must not end sweeping (nor the worker's session)
                log.exception("sweeping receipt deadlines crashed; trying again")
            await asyncio.sleep(self._interval_s)

    async def sweep_once(self) -> int:
        """One round: how many messages it offered (ended now or re-offered)."""
        due = await self._store.sweep(limit=self._batch,
                                      retry_s=max(self._interval_s * 4, 10.0))
        if not due:
            return 0
        now = datetime.now(UTC)
        await self._broker.publish([self._event(item, now) for item in due])
        await self._store.swept([item.message_id for item in due])
        count_finals([(State.EXPIRED, NO_RECEIPT)] * len(due))
        self.expired += len(due)
        log.warning("messages expired without a final receipt", messages=len(due),
                    error_code=NO_RECEIPT)
        return len(due)

    def _event(self, item: Expired, now: datetime) -> Outgoing:
        record, context = item.record, item.record.context
        return event_message_from_fields(self._topology, Status.EXPIRED, {
            "event_id": make_event_id(item.message_id, Status.EXPIRED, NO_RECEIPT),
            "message_id": item.message_id,
            "campaign_id": context.campaign_id if context else None,
            "occurred_at": now, "sender": context.sender if context else None,
            "provider_message_id": record.provider_message_id,
            "error_code": NO_RECEIPT, "error": _ERROR, "attempt": record.attempt,
            "segments": context.segments if context else None,
            "encoding": context.encoding if context else None,
            "metadata": context.metadata if context else None,
        })
