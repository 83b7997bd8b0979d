"""From a delivery to a decision: a :class:`Job` to submit, or an immediate outcome.

Everything here is synchronous and cheap: it runs for every message as it arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import TypeAdapter, ValidationError

from ics_sms.broker.base import Delivery, Outgoing
from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import Identifier, SendRequest
from ics_sms.schemas.senders import ClickTracking, Lane, Sender, Senders, dlt_problem
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import (
    HEADER_ATTEMPT,
    HEADER_PARKED,
    HEADER_PUBLISH_ID,
    HEADER_REFUSED_SINCE,
    Topology,
)
from ics_sms.stores.context import MessageContext
from ics_sms.stores.live import SendersView, as_view
from ics_sms.stores.messages import Claim, fingerprint
from ics_sms.workers.encoding import TextInfo, analyse
from ics_sms.workers.links import rewrite_links
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import MAX_PARKS

__all__ = ["Decision", "Job", "JobFactory", "Refusal", "Settle", "publish_id"]

_MAX_REFUSED_WAIT_S = 30 * 86400
_id_adapter: TypeAdapter[str] = TypeAdapter(Identifier)


@dataclass(slots=True)
class Job:
    """A valid message on its way to ICS."""

    delivery: Delivery
    request: SendRequest
    sender: Sender
    attempt: int
    parked: int
    smsgid: str
    info: TextInfo
    text: str
    links: dict[str, str]
    fingerprint: str = ""
    """Hash of the request's content (set when the job is claimed)."""
    context: MessageContext | None = None
    """What the receiver needs of the message (built once, when the job is claimed)."""
    token: str = ""
    """The claim token of the job's batch (fences every transition the batch makes)."""
    refused_since: int | None = None
    """Epoch seconds since when it waits because ICS refuses its sender's credentials."""

    def claim(self, token: str) -> Claim:
        """The job's claim for the batch ``token``: its fingerprint and the context the
        record keeps for the receiver (built once, here)."""
        self.token = token
        self.fingerprint = fingerprint(self.request, publish_id(self.delivery))
        self.context = MessageContext.for_request(self.request, sender=self.sender.name,
                                                  segments=self.info.segments,
                                                  encoding=self.info.encoding)
        return Claim(self.request.message_id, self.fingerprint, self.attempt, self.context,
                     self.smsgid, self.request.to)


@dataclass(slots=True)
class Settle:
    """Settle this delivery now with these messages (no ICS call needed)."""

    delivery: Delivery
    messages: Sequence[Outgoing]
    requeue: bool = False


@dataclass(slots=True)
class Refusal:
    """A message refused before any batch (unknown sender, DLT, invalid body). It ends
    ``rejected`` only if it claims its message_id in the store: a reused id is a duplicate,
    a redelivery of an already refused or sent message re-emits or waits, never a second
    final status (:meth:`~ics_sms.workers.submit.Submitter.refuse`)."""

    delivery: Delivery
    message_id: str
    campaign_id: str | None
    request: SendRequest | None
    """None for a body that is not a valid send request (only its ids could be read)."""
    sender: str | None
    attempt: int
    code: str
    error: str

    def claim(self) -> Claim:
        publish = publish_id(self.delivery)
        if self.request is not None:
            fp = fingerprint(self.request, publish)
            context = MessageContext.for_request(self.request, sender=self.sender or "")
        else:
            fp = hashlib.blake2b(self.delivery.body + (publish or "").encode(),
                                 digest_size=12).hexdigest()
            context = MessageContext.model_construct(
                message_id=self.message_id, campaign_id=self.campaign_id or "", sender="",
                metadata={}, segments=None, encoding=None, urls=())
        return Claim(self.message_id, fp, self.attempt, context,
                     to=self.request.to if self.request is not None else "")


Decision = Job | Settle | Refusal


def publish_id(delivery: Delivery) -> str | None:
    """The ``x-ics-publish-id`` the delivery's publisher gave it, if any (text only)."""
    value = delivery.headers.get(HEADER_PUBLISH_ID)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value[:64] if isinstance(value, str) and value else None


def _header_count(delivery: Delivery, name: str, low: int, high: int) -> int:
    """A count from a message header, never trusted beyond ``low..high``: anyone can publish
    a send request, so an absent, forged or corrupt value (a bool, a string, a float, a
    negative or huge number) reads as ``low`` or is clamped into the range."""
    value = delivery.headers.get(name)
    if type(value) is not int:
        return low
    return low if value < low else high if value > high else value


class JobFactory:
    """Parses and checks deliveries against the senders and India's DLT rules."""

    def __init__(self, topology: Topology, senders: Senders | SendersView, signer: SmsgidSigner,
                 outcomes: Outcomes, *, max_attempts: int, link_secret: bytes,
                 link_base_url: str) -> None:
        self._lane_of_queue = {topology.send_queue(lane): lane for lane in Lane}
        self._max_attempts = max(max_attempts, 1)
        self._link_secret = link_secret
        self._link_base_url = link_base_url
        self._senders = as_view(senders)
        self._signer = signer
        self._out = outcomes

    def __repr__(self) -> str:
        return (f"<JobFactory senders={len(self._senders.current)} "
                f"max_attempts={self._max_attempts}>")

    def decide(self, delivery: Delivery, now: datetime) -> Decision:
        try:
            request = SendRequest.model_validate_json(delivery.body)
        except ValidationError as exc:
            return self._unparseable(delivery, "; ".join(describe(exc)))
        sender = self._senders.current.get(request.sender)
        attempt = _header_count(delivery, HEADER_ATTEMPT, 1, self._max_attempts)
        if sender is None:
            name = request.sender or "(default)"
            reason = (f"unknown sender {name!r}" if request.sender
                      else "no sender named and no default sender configured")
            return self._reject(delivery, request, None, "unknown_sender", reason, attempt)
        if sender.disabled is not None:
            return self._reject(delivery, request, sender.name, "sender_disabled",
                                f"sender {sender.name!r} is disabled: {sender.disabled}",
                                attempt)
        lane = self._lane_of_queue.get(delivery.queue)
        if lane is not None and lane is not sender.lane:
            return Settle(delivery, [self._out.lane_move(delivery, sender.lane)])
        # An expired message still becomes a job: it ends ``expired`` once claimed (a
        # redelivery of a message already sent must not get a second final status).
        problem = dlt_problem(request, sender)
        if problem is not None:
            return self._reject(delivery, request, sender.name, "dlt", problem.message, attempt)
        text, links = request.text, {}
        if sender.click_tracking is ClickTracking.SELF:
            rewritten = rewrite_links(text, request.message_id, self._link_secret,
                                      self._link_base_url)
            text, links = rewritten.text, rewritten.links
        job = Job(delivery, request, sender, attempt,
                  _header_count(delivery, HEADER_PARKED, 0, MAX_PARKS),
                  self._signer.sign(request.message_id, sender.name), analyse(text), text, links)
        since = delivery.headers.get(HEADER_REFUSED_SINCE)
        if type(since) is int:  # never later than now, nor before the longest wait allowed
            epoch = int(now.timestamp())
            job.refused_since = min(max(since, epoch - _MAX_REFUSED_WAIT_S), epoch)
        return job

    @staticmethod
    def _reject(delivery: Delivery, request: SendRequest, sender: str | None,
                reason: str, error: str, attempt: int) -> Refusal:
        return Refusal(delivery, request.message_id, request.campaign_id, request, sender,
                       attempt, reason, error)

    def _unparseable(self, delivery: Delivery, error: str) -> Decision:
        message_id, campaign_id = _salvage_ids(delivery.body)
        if message_id is not None:
            return Refusal(delivery, message_id, campaign_id, None, None, 1,
                           "invalid_message", error)
        return Settle(delivery, [self._out.dead_copy(delivery, "invalid_message", error)])


def _salvage_ids(body: bytes) -> tuple[str | None, str | None]:
    """message_id and campaign_id of a message that failed validation, when usable."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    try:
        message_id = _id_adapter.validate_python(data.get("message_id"))
    except ValidationError:
        return None, None
    campaign = data.get("campaign_id")
    return message_id, campaign if isinstance(campaign, str) and len(campaign) <= 128 else None
