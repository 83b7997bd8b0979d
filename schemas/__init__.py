"""The contract of ics-sms: message models, ICS wire shapes, senders, topology, settings."""

from ics_sms.schemas.messages import (
    SCHEMA_VERSION,
    TERMINAL_STATUSES,
    Encoding,
    ReceiptEvent,
    SendRequest,
    Status,
    make_event_id,
)
from ics_sms.schemas.senders import ClickTracking, Lane, Sender, SenderError, Senders, SenderType
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology

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
