"""One test SMS sent now, checked like a campaign's message: ``ics-sms senders test`` and the
console's "send test SMS" button.

The request is validated as a send request, then against India's DLT rules, the
promotional window (a promotional sender outside it needs ``outside_window``) and its
segment count; it is sent through the same ICS adapter the workers use, with a signed
smsgid and the sender's tracking URL, after its message context was left for the
receiver, so its receipts come back as events of campaign :data:`TEST_CAMPAIGN_ID`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
from pydantic import ValidationError

from ics_sms.schemas.errors import describe
from ics_sms.schemas.ics import RecordResult
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import ClickTracking, Lane, Sender, dlt_problem
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import ContextStoreError, MessageContext, open_context_store
from ics_sms.workers.encoding import TextInfo, analyse
from ics_sms.workers.ics import IcsClient, SubmitResult
from ics_sms.workers.window import PromoWindow

__all__ = ["MAX_TEST_SEGMENTS", "TEST_CAMPAIGN_ID", "Trial", "TrialRefused", "TrialSent",
           "prepare", "send"]

MAX_TEST_SEGMENTS = 3
"""A longer test text needs an explicit yes: each segment is billed as one SMS."""
TEST_CAMPAIGN_ID = "senders-test"
_CONTEXT_TIMEOUT_S = 5.0


class TrialRefused(ValueError):
    """The test message cannot be sent: ``field`` (a send request field, ``sender`` or
    ``window``) and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Trial:
    """A test message ready to send: the request, its encoding and segments, and a
    warning to show (sent outside the promotional window)."""

    sender: Sender
    request: SendRequest
    info: TextInfo
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class TrialSent:
    """What ICS answered, and why the message context was not stored (its receipt events
    then lack campaign_id, segments and encoding)."""

    result: SubmitResult
    unremembered: str | None = None

    @property
    def accepted(self) -> bool:
        answer = self.answer
        return answer is not None and answer.accepted

    @property
    def answer(self) -> RecordResult | None:
        """ICS's answer for the message (None: the request failed, or no answer for it)."""
        return next(iter(self.result.results.values()), None) if self.result.ok else None

    def said(self) -> str:
        """ICS's answer in one line."""
        if not self.result.ok:
            return f"ICS did not accept the request: {self.result.reason}"
        answer = self.answer
        if answer is None:
            return ("ICS answered without a result for the message: it may or may not be "
                    "sent; watch for its receipt")
        if not answer.accepted:
            return f"ICS refused the message: {answer.error}"
        return f"accepted by ICS: mid={answer.mid}"


def prepare(settings: Settings, sender: Sender, *, to: str, text: str,
            dlt_template_id: str | None, now: datetime, outside_window: bool = False,
            many_segments: bool = False) -> Trial:
    """The test message checked like a campaign's; raises :class:`TrialRefused`."""
    fields = {"message_id": f"test-{uuid.uuid4().hex[:16]}", "campaign_id": TEST_CAMPAIGN_ID,
              "to": to, "text": text, "sender": sender.name,
              "dlt_template_id": dlt_template_id}
    try:
        request = SendRequest.model_validate(fields)
    except ValidationError as exc:
        field, _, reason = describe(exc)[0].partition(": ")
        raise TrialRefused(field, reason) from None
    problem = dlt_problem(request, sender)
    if problem is not None:
        raise TrialRefused("dlt_template_id" if problem.field == "dlt_template_id"
                           else "sender", problem.reason)
    warning = _window(settings, sender, now, outside_window)
    info = analyse(request.text)
    if info.segments > MAX_TEST_SEGMENTS and not many_segments:
        raise TrialRefused("text", f"{info.segments} segments (each billed as one SMS), "
                                   f"more than {MAX_TEST_SEGMENTS}")
    return Trial(sender, request, info, warning)


def _window(settings: Settings, sender: Sender, now: datetime,
            outside_window: bool) -> str | None:
    if sender.lane is not Lane.PROMOTIONAL:
        return None
    window = PromoWindow.of(settings.promo_window_start, settings.promo_window_end,
                            settings.promo_timezone)
    if window.is_open(now):
        return None
    hours = f"{window.start:%H:%M}-{window.end:%H:%M} {settings.promo_timezone}"
    if not outside_window:
        opens = now + timedelta(seconds=window.seconds_until_change(now))
        raise TrialRefused("window", f"sender {sender.name!r} is promotional and the "
                                     f"promotional window ({hours}) is closed until "
                                     f"{opens:%Y-%m-%d %H:%M} UTC: the workers would hold "
                                     "this message")
    return f"outside the promotional window ({hours}), sent anyway"


async def _remember(settings: Settings, context: MessageContext) -> str | None:
    """Leave the message context for the receiver, like a worker; the reason if not."""
    store = open_context_store(settings)
    try:
        await asyncio.wait_for(store.put_many([context]), _CONTEXT_TIMEOUT_S)
    except (ContextStoreError, TimeoutError) as exc:
        return str(exc) or "timed out"
    finally:
        await store.close()
    return None


async def send(settings: Settings, trial: Trial) -> TrialSent:
    """Send the test message to ICS (``ICS_SMS_ICS_URL``) with the sender's token."""
    sender, request, info = trial.sender, trial.request, trial.info
    context = MessageContext.for_request(request, sender=sender.name, segments=info.segments,
                                         encoding=info.encoding)
    unremembered = await _remember(settings, context)
    signer = SmsgidSigner(settings.callback_secret.get_secret_value() or "senders-test")
    smsgid = signer.sign(request.message_id, sender.name)
    record = IcsClient.record(request.to, sender.sender_id, request.text, smsgid,
                              sender.dlt_entity_id, request.dlt_template_id)
    batch = IcsClient.build(sender.username, [record],
                            dlrurl=settings.tracking_url(sender.tracking_path()),
                            urlshortening=sender.click_tracking is ClickTracking.ICS)
    async with aiohttp.ClientSession() as http:
        client = IcsClient(http, str(settings.ics_url), settings.ics_timeout_s)
        result = await client.submit(batch, sender.resolve_token())
    return TrialSent(result, unremembered)
