"""Prometheus metrics of the receiver (names documented in docs/operations.md)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

__all__ = ["CLICKS", "PUBLISH_DURATION", "RECEIPTS", "REFUSED", "REQUESTS", "UNKNOWN_URL",
           "WITHOUT_RECORD",
           "count_receipts", "refusal_kind", "route_label"]

RECEIPTS = Counter("ics_sms_receipts", "Receipts turned into events.", ["sender", "status"])
REFUSED = Counter("ics_sms_receipts_refused", "Receipt records refused.", ["reason"])
REQUESTS = Counter("ics_sms_receiver_requests", "HTTP requests by route and status code.",
                   ["route", "code"])
PUBLISH_DURATION = Histogram("ics_sms_receiver_publish_duration_seconds",
                             "From receipts parsed to events confirmed by the broker.",
                             buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
CLICKS = Counter("ics_sms_clicks", "Click events published.", ["sender"])
UNKNOWN_URL = Counter("ics_sms_receipts_unknown_url",
                      "Receipt requests refused (404) on a tracking URL of no sender: "
                      "unknown (never configured here), grace_over (a removed sender, after "
                      "its grace period).", ["reason"])


_REFUSAL_KINDS = (
    ("invalid smsgid", "invalid_smsgid"),
    ("smsgid of another sender", "other_sender"),
    ("clicked url is not", "url_not_in_message"),
    ("clicked url cannot be checked", "links_unknown"),
    ("smsgid without sender binding", "unbound_legacy"),
    ("unknown event", "unknown_event"),
    ("message not submitted", "not_submitted"),
)
"""The start of each refusal reason and its metric label."""


def refusal_kind(reason: str) -> str:
    """A bounded label for a refusal reason (reasons can echo what the client sent)."""
    return next((kind for start, kind in _REFUSAL_KINDS if reason.startswith(start)),
                "malformed")


def route_label(path: str) -> str:
    """The route of a path, without the tracking token (a secret) or other input."""
    if path.startswith("/ics/") and path.endswith("/receipts"):
        return "receipts"
    if path.startswith("/l/"):
        return "link"
    return path.strip("/") if path in ("/healthz", "/readyz", "/metrics") else "other"


def count_receipts(sender: str, statuses: Iterable[str]) -> None:
    tally = Tally(statuses)
    for status, count in tally.items():
        RECEIPTS.labels(sender, status).inc(count)
    if tally.get("clicked"):
        CLICKS.labels(sender).inc(tally["clicked"])


WITHOUT_RECORD = Counter("ics_sms_receipts_without_record",
                         "Receipts accepted for messages the message store has no record of "
                         "(store data lost, or records past their TTL).")
