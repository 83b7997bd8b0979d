"""The producer library campaign engines embed: validated send requests onto RabbitMQ.

See :class:`producers.publisher.Producer` and, for campaign files,
:mod:`producers.campaign`.
"""

from producers.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    ConnectionLost,
    InvalidRequest,
    ProducerError,
    PublishError,
    TopologyConflict,
)
from producers.publisher import OnProgress, Producer, RequestLike, validate_request
from producers.retry import RetryPolicy

__all__ = [
    "BrokerUnavailable",
    "ConfirmTimeout",
    "ConnectionLost",
    "InvalidRequest",
    "OnProgress",
    "Producer",
    "ProducerError",
    "PublishError",
    "RequestLike",
    "RetryPolicy",
    "TopologyConflict",
    "validate_request",
]
