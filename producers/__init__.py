"""The producer library campaign engines embed: validated send requests onto RabbitMQ.

See :class:`ics_sms.producers.publisher.Producer` and, for campaign files,
:mod:`ics_sms.producers.campaign`.
"""

from ics_sms.producers.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    ConnectionLost,
    InvalidRequest,
    ProducerError,
    PublishError,
    TopologyConflict,
)
from ics_sms.producers.publisher import OnProgress, Producer, RequestLike, validate_request
from ics_sms.producers.retry import RetryPolicy

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
