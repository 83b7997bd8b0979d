"""What can go wrong when publishing, as exceptions a campaign engine can act on.

Every error is one line saying why, and every one is a :class:`ProducerError`::

    ProducerError
    ├── InvalidRequest       a send request failed validation (``index``, ``confirmed``)
    ├── BrokerUnavailable    no connection within the retry budget
    ├── TopologyMismatch     the broker holds our exchanges/queues with other arguments
    └── PublishError         the broker did not confirm everything (``confirmed``)
        ├── PublishInterrupted   the connection dropped and stayed down
        └── ConfirmTimeout       no confirm for ``confirm_timeout_s``

Publishing errors carry ``confirmed``: how many requests of the call, counted from the
first, the broker confirmed before it stopped (the ones after it are *not* reported as
published; publishing them again is safe because ``message_id`` is the idempotency key).

These are the producer's own names: the services' broker layer has its own errors
(:mod:`ics_sms.broker.base`, rooted at ``BrokerError``), which never reach a producer caller.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BrokerUnavailable",
    "ConfirmTimeout",
    "InvalidRequest",
    "ProducerError",
    "PublishError",
    "PublishInterrupted",
    "TopologyMismatch",
]


class ProducerError(Exception):
    """Root of every error of the producer library."""


class InvalidRequest(ProducerError, ValueError):
    """A send request failed validation; nothing of it was sent."""

    def __init__(self, problems: Sequence[str], *, index: int | None = None,
                 confirmed: int = 0) -> None:
        self.problems = list(problems)
        self.index = index
        self.confirmed = confirmed
        where = "invalid send request" if index is None else f"send request #{index} is invalid"
        super().__init__(f"{where}: " + "; ".join(self.problems))


class TopologyMismatch(ProducerError):
    """The broker holds an exchange or queue of the namespace with other arguments than the
    producer declares (raised by ``connect``; delete it or choose another namespace)."""


class BrokerUnavailable(ProducerError):
    """The broker could not be reached within the retry budget."""


class PublishError(ProducerError):
    """The broker did not confirm every message: refused (nack), unroutable or unknown."""

    def __init__(self, reason: str, *, confirmed: int) -> None:
        self.reason = reason
        self.confirmed = confirmed
        super().__init__(f"{reason} ({confirmed} confirmed before it)")


class PublishInterrupted(PublishError):
    """The connection dropped during the call and could not be re-established within the
    retry budget."""


class ConfirmTimeout(PublishError):
    """The broker did not confirm in time (blocked by an alarm, or overloaded)."""
