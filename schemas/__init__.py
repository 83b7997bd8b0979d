"""The contract of ics-sms: message models, ICS wire shapes, senders, topology, settings."""

from schemas.messages import (
    SCHEMA_VERSION,
    TERMINAL_STATUSES,
    Encoding,
    ReceiptEvent,
    SendRequest,
    Status,
    make_event_id,
)
from schemas.senders import ClickTracking, Lane, Sender, SenderError, Senders, SenderType
from schemas.settings import Settings
from schemas.topology import Topology

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "ClickTracking",
    "Encoding",
    "Lane",
    "ReceiptEvent",
    "SendRequest",
    "Sender",
    "SenderError",
    "SenderType",
    "Senders",
    "Settings",
    "Status",
    "Topology",
    "make_event_id",
]
