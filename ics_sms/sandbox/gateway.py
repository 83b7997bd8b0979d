"""The simulated ICS core: answer each record of a submission and schedule its receipts."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ics_sms.sandbox import wire
from ics_sms.sandbox.config import SandboxConfig
from ics_sms.sandbox.datasend import Refusal, Submission, refusal_reason
from ics_sms.sandbox.dispatcher import ReceiptDispatcher
from ics_sms.sandbox.faults import Faults
from ics_sms.sandbox.outcomes import Fate, decide, find_url, short_url
from ics_sms.sandbox.receipts import PendingReceipt
from ics_sms.sandbox.stats import SandboxStats
from ics_sms.schemas.ics import DatasendRecord
from ics_sms.schemas.messages import Status

__all__ = ["Gateway"]

_DELIVERED = Status.DELIVERED.value
_FAILED = Status.FAILED.value
_CLICKED = Status.CLICKED.value


class Gateway:
    """Accepts or refuses records, decides their fate and schedules their receipts."""

    def __init__(
        self,
        config: SandboxConfig,
        stats: SandboxStats,
        faults: Faults,
        dispatcher: ReceiptDispatcher,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._stats = stats
        self._faults = faults
        self._dispatcher = dispatcher
        self._rng = rng
        self._mid_prefix = f"{rng.getrandbits(32):08x}"
        self._mids = 0

    def __repr__(self) -> str:
        return f"<Gateway mids={self._mids} stats={self._stats!r}>"

    def answer(self, submission: Submission) -> list[wire.Answer]:
        """ICS's answer to ``submission``, one entry per record, in order."""
        answers: list[wire.Answer] = []
        plan = _Plan(submission.dlrurl or self._config.default_dlr_url, time.time())
        for entry in submission.entries:
            if isinstance(entry, Refusal):
                answers.append(self._refuse(entry.to, entry.smsgid, entry.reason))
                continue
            reason = refusal_reason(entry, submission.allowunicode)
            if reason is not None:
                answers.append(self._refuse(entry.to, entry.smsgid, reason))
                continue
            answers.append(self._accept(entry, submission.urlshortening, plan))
        self._dispatcher.schedule(plan.receipts)
        return answers

    def _refuse(self, to: str | None, smsgid: str | None, reason: str) -> wire.Answer:
        self._stats.records_refused += 1
        return wire.refused(to, smsgid, reason)

    def _accept(self, record: DatasendRecord, clicks: bool, plan: _Plan) -> wire.Answer:
        self._mids += 1
        mid = f"{self._mid_prefix}{self._mids:010d}"
        self._stats.count_accepted(record.smsgid)
        fate = decide(record.to, self._rng, self._faults.delivery_ratio)
        if fate.receipt:
            self._plan_receipts(record, fate, clicks, plan)
        return wire.accepted(record.to, record.from_, mid, record.smsgid)

    def _plan_receipts(self, record: DatasendRecord, fate: Fate, clicks: bool,
                       plan: _Plan) -> None:
        if plan.url is None:
            self._stats.receipts_unroutable += 1
            return
        delay_s = self._receipt_delay_s()
        ts = int(plan.wall_s + delay_s)
        if fate.code is None:
            self._add(plan, _DELIVERED, wire.delivered(ts, record.smsgid), delay_s)
            if clicks:
                self._maybe_click(record, fate, delay_s, plan)
        else:
            data = wire.failed(ts, record.smsgid, fate.code, fate.description)
            self._add(plan, _FAILED, data, delay_s)

    def _maybe_click(self, record: DatasendRecord, fate: Fate, after_s: float,
                     plan: _Plan) -> None:
        if not fate.always_click and self._rng.random() >= self._faults.click_ratio:
            return
        link = find_url(record.smstext)
        if link is None:
            return
        delay_s = after_s + self._config.click_delay_ms / 1000
        data = wire.clicked(int(plan.wall_s + delay_s), record.smsgid, link,
                            short_url(record.smsgid, link))
        self._add(plan, _CLICKED, data, delay_s)

    def _add(self, plan: _Plan, event: str, data: wire.ReceiptBody, delay_s: float) -> None:
        """Plan a receipt; sometimes twice, as ICS may send a receipt again."""
        assert plan.url is not None
        plan.receipts.append((delay_s, PendingReceipt(plan.url, event, data)))
        ratio = self._config.duplicate_receipt_ratio
        if ratio and self._rng.random() < ratio:
            again_s = delay_s + self._receipt_delay_s()
            plan.receipts.append((again_s, PendingReceipt(plan.url, event, data)))

    def _receipt_delay_s(self) -> float:
        jitter_ms = self._config.receipt_jitter_ms
        extra_ms = self._rng.random() * jitter_ms if jitter_ms else 0.0
        return (self._config.receipt_delay_ms + extra_ms) / 1000


@dataclass(slots=True)
class _Plan:
    """The receipts one request will cause, scheduled together when it is answered."""

    url: str | None
    wall_s: float
    receipts: list[tuple[float, PendingReceipt]] = field(default_factory=list)
