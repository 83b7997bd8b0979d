"""The producer library campaign engines embed: validated send requests onto RabbitMQ.

See :class:`ics_sms.producers.publisher.Producer`, its errors in
:mod:`ics_sms.producers.errors` (all rooted at :class:`ProducerError`) and, for campaign
files, :mod:`ics_sms.producers.campaign`.
"""

from ics_sms.producers.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    InvalidRequest,
    ProducerError,
    PublishError,
    PublishInterrupted,
    TopologyMismatch,
)
from ics_sms.producers.publisher import OnProgress, Producer, RequestLike, validate_request
from ics_sms.producers.retry import RetryPolicy

__all__ = [
    "BrokerUnavailable",
    "ConfirmTimeout",
    "InvalidRequest",
    "OnProgress",
    "Producer",
    "ProducerError",
    "PublishError",
    "PublishInterrupted",
    "RequestLike",
    "RetryPolicy",
    "TopologyMismatch",
    "validate_request",
]
