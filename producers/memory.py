"""The producer for the embedded broker (``memory://``): the same API, in process.

Campaign engines embed :class:`~ics_sms.producers.publisher.Producer` against RabbitMQ; the demo
and unit tests use this one, which routes through the :class:`~ics_sms.broker.memory.MemoryHub` of
the URL. A publish is confirmed when it returns, as on the hub itself. It must be called
from the thread that runs the event loop of the services reading the hub.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from ics_sms.broker.codec import send_message
from ics_sms.broker.memory import MemoryHub, hub_for
from ics_sms.producers.publisher import OnProgress, RequestLike, validate_request
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane, Senders
from ics_sms.schemas.topology import Topology

__all__ = ["MemoryProducer"]


class MemoryProducer:
    """Publishes validated send requests into an in-process hub."""

    def __init__(self, url: str, topology: Topology, senders: Senders | None = None) -> None:
        self._hub: MemoryHub = hub_for(url)
        self._topology = topology
        self._senders = senders or Senders()
        self.published = 0

    def __repr__(self) -> str:
        return f"<MemoryProducer published={self.published}>"

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self._hub.declare(self._topology)

    def close(self) -> None:
        """Nothing to release."""

    def lane_for(self, request: SendRequest) -> Lane:
        sender = self._senders.get(request.sender)
        return Lane.SERVICE if sender is None else sender.lane

    def publish(self, request: RequestLike) -> None:
        self.publish_many([request])

    def publish_many(self, requests: Iterable[RequestLike], *,
                     on_progress: OnProgress | None = None) -> int:
        count = 0
        for item in requests:
            request = validate_request(item)
            self._hub.publish(send_message(self._topology, request, self.lane_for(request)))
            count += 1
            if on_progress is not None:
                on_progress(count)  # like Producer: confirmed so far in this call
        self.published += count
        return count
