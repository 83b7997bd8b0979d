"""Scenario 5 (continued): property-based fuzzing with hypothesis.

``test_worker_path_never_crashes``: arbitrary bodies and headers on ``sms.send`` go through
the worker's own per-message path, built exactly as a worker builds it: parse and decide
(``JobFactory.decide``), build and serialise the ICS request (``Submitter.call`` against a
stand-in ICS that accepts everything), interpret the answer. Property: nothing raises;
an unusable message becomes a dead letter with an ``x-ics-reason``; every event the worker
would publish fits the ReceiptEvent contract; every ICS record fits the datasend schema.

``test_receipt_endpoint_never_answers_5xx``: arbitrary receipt requests (JSON event
groups with valid, forged and random smsgids, operator-style forms and queries, random
bytes under random content types) at a real receiver process. Property: never a 5xx,
always a JSON answer; afterwards no event exists for a forged smsgid and the receiver
still serves.
"""

from __future__ import annotations

import asyncio
import json
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from ics_sms.broker.base import Delivery
from ics_sms.broker.memory import MemoryBroker
from ics_sms.schemas.ics import DatasendRequest, RecordResult
from ics_sms.schemas.messages import ReceiptEvent
from ics_sms.schemas.senders import ClickTracking, Lane, Sender, Senders, SenderType
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.schemas.topology import HEADER_REASON
from ics_sms.stores.messages import ClaimResult
from ics_sms.workers.ics import SubmitResult
from ics_sms.workers.jobs import Job, Refusal, Settle
from ics_sms.workers.service import Worker, _Session
from ics_sms.workers.submit import Submitter
from tests.chaos.campaign import TEMPLATE_ID
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import ENTITY_ID, FAST, FULL, http_request, profiles
from tests.chaos.results import Row, record

EXAMPLES = {FAST: 100, FULL: 3_000}


def _failure(exc: BaseException) -> str:
    """The error(s) and hypothesis's falsifying examples (kept in the exceptions' notes)."""
    if isinstance(exc, BaseExceptionGroup):
        return " || ".join(_failure(inner) for inner in exc.exceptions)
    notes = " | ".join(getattr(exc, "__notes__", []))
    where = ""
    if exc.__traceback__ is not None:
        frames = traceback.extract_tb(exc.__traceback__)
        product = [f for f in frames if "/tests/" not in f.filename
                   and "site-packages" not in f.filename]
        if product:
            where = f" at {Path(product[-1].filename).name}:{product[-1].lineno}"
    return f"{type(exc).__name__}{where}: {str(exc)[:300]} [{notes[:900]}]"


def _settings(profile: str) -> settings:
    return settings(max_examples=EXAMPLES[profile], deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# -- the worker's per-message path ----------------------------------------------------------

_texts = st.one_of(st.text(max_size=300), st.text(max_size=2_100),
                   st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
                   st.sampled_from(["https://x.example/a b", "http://",
                                    "see https://a.b/c?d=e&f=g#h and http://[::1]:80/ x",
                                    "€[]{}^~\\|", "\U0001f600" * 80, "\x00\x1b\u200b", " "]))
_numbers = st.one_of(st.sampled_from(["+919812345678", "+447700900123", "+12025550100",
                                      "+919000000400", "00919812345678", "+91 98123 45678"]),
                     st.text(max_size=25), st.from_regex(r"\+[0-9]{1,18}", fullmatch=True))
_ids = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,70}", fullmatch=True),
                 st.text(max_size=80))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(2**63, 2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@st.composite
def send_bodies(draw: st.DrawFn) -> bytes:
    """Mostly near-valid SendRequests with some fields broken, sometimes anything at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=500))
    if kind == 1:
        return _dumps(draw(_json_values))
    fields: dict[str, Any] = {
        "schema_version": draw(st.sampled_from([1, 1, 1, 2, "1", None, 1.0])),
        "message_id": draw(_ids), "campaign_id": draw(st.text(max_size=140)),
        "to": draw(_numbers), "text": draw(_texts),
        "sender": draw(st.sampled_from(["chaos-otp", "chaos-offers", "chaos-self", "nobody",
                                        None, "", "x" * 70])),
        "dlt_template_id": draw(st.sampled_from([TEMPLATE_ID, None, "abc", "1" * 31])),
        "expires_at": draw(st.sampled_from([None, "2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z",
                                            "2030-01-01T00:00:00", "tomorrow", 12345])),
        "metadata": draw(st.dictionaries(st.text(max_size=10), _json_values, max_size=60)),
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3)):
        fields.pop(name, None)
    if draw(st.booleans()):
        fields[draw(st.text(max_size=10))] = draw(_json_values)
    return _dumps({k: v for k, v in fields.items() if v is not None or draw(st.booleans())})


def _dumps(value: object) -> bytes:
    """JSON as any client may write it: integers of any size (orjson stops at 64 bits)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


_BIGINT_VALID = (b'{"message_id": "m", "campaign_id": "c", "to": "+919812345678", '
                 b'"text": "0", "sender": "chaos-otp", "dlt_template_id": "%s", '
                 b'"metadata": {"n": -9223372036854775809}}' % TEMPLATE_ID.encode())
_BIGINT_REJECTED = (b'{"message_id": "m", "campaign_id": "c", "to": "+919812345678", '
                    b'"text": "0", "sender": "chaos-otp", "metadata": {"n": 18446744073709551616}}')

_headers = st.dictionaries(
    st.sampled_from(["x-ics-attempt", "x-ics-parked", "x-ics-reason", "x-death", "other"]),
    st.one_of(st.integers(-5, 10**15), st.text(max_size=10), st.none(), st.booleans()),
    max_size=3)


class AcceptingIcs:
    """Stands in for the ICS adapter: takes the datasend body exactly as the worker built
    it, checks it against the datasend schema, and accepts every record."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    async def submit(self, batch: Any, token: SecretStr) -> SubmitResult:
        body = batch.body if isinstance(getattr(batch, "body", None), bytes) else \
            batch.model_dump_json(by_alias=True, exclude_none=True).encode()
        try:
            request = DatasendRequest.model_validate_json(body)
        except ValueError as exc:
            self.problems.append(f"the worker built a datasend body its own schema refuses: "
                                 f"{str(exc)[:300]}")
            return SubmitResult(results={}, status=200)
        answers = {r.smsgid: RecordResult(to=r.to, mid=f"mid-{i}", smsgid=r.smsgid)
                   for i, r in enumerate(request.smstosend)}
        return SubmitResult(results=answers, status=200)


def _worker_path() -> tuple[Any, Submitter, AcceptingIcs, Senders]:
    """The factory and submitter a worker process uses, built by the worker's own code."""
    token = SecretStr("fuzz-token-0123456789")
    senders = (Senders()
               .add(Sender(name="chaos-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                           username="u1", token=token, dlt_entity_id=ENTITY_ID))
               .add(Sender(name="chaos-offers", type=SenderType.PROMOTIONAL, sender_id="512345",
                           username="u2", token=token, dlt_entity_id=ENTITY_ID,
                           click_tracking=ClickTracking.ICS))
               .add(Sender(name="chaos-self", type=SenderType.TRANSACTIONAL, sender_id="ACMETX",
                           username="u3", token=token, click_tracking=ClickTracking.SELF)))
    config = Settings(broker_url=SecretStr(f"memory://fuzz-{uuid.uuid4().hex[:6]}"),
                      namespace="fuzz.", callback_secret=SecretStr("fuzz-secret-" * 3),
                      redis_url="memory://")
    worker = Worker(config, senders)
    ics = AcceptingIcs()
    submitter = Submitter(config, ics, worker.outcomes, worker.policy)  # type: ignore[arg-type]
    session = _Session(worker, MemoryBroker(str(config.broker_url.get_secret_value())),
                       submitter)
    return session, submitter, ics, senders


def _check_outgoing(messages: Any, topology_prefix: str = "fuzz.") -> None:
    for message in messages:
        if message.exchange == f"{topology_prefix}sms.events":
            ReceiptEvent.model_validate_json(message.body)
        if message.exchange == f"{topology_prefix}sms.dead":
            assert (message.headers or {}).get(HEADER_REASON), "dead letter without reason"


@pytest.mark.parametrize("profile", profiles())
def test_worker_path_never_crashes(profile: str) -> None:
    session, submitter, ics, senders = _worker_path()
    factory = session.jobs
    now = datetime.now(UTC)
    seen = {"examples": 0, "jobs": 0, "settled": 0, "refused": 0, "dead": 0}

    @_settings(profile)
    @given(body=send_bodies(), headers=_headers, lane=st.sampled_from(list(Lane)))
    @example(body=_BIGINT_VALID, headers={}, lane=Lane.SERVICE)  # found by this fuzz
    @example(body=_BIGINT_REJECTED, headers={}, lane=Lane.SERVICE)  # found by this fuzz
    @example(body=b'{"message_id": "m", "campaign_id": "c", "to": "+919812345678", '
                  b'"text": "\\ud800", "sender": "chaos-otp"}', headers={}, lane=Lane.SERVICE)
    @example(body=b"", headers={"x-ics-attempt": 10**12}, lane=Lane.PROMOTIONAL)
    def check(body: bytes, headers: dict[str, Any], lane: Lane) -> None:
        seen["examples"] += 1
        delivery = Delivery(body=body, exchange="fuzz.sms.send", routing_key=lane.value, tag=1,
                            redelivered=False, generation=0, queue=f"fuzz.sms.send.{lane.value}",
                            headers=headers, message_id="fuzz")
        decision = factory.decide(delivery, now)
        if isinstance(decision, Settle):
            seen["settled"] += 1
            seen["dead"] += any(m.exchange == "fuzz.sms.dead" for m in decision.messages)
            _check_outgoing(decision.messages)
            return
        if isinstance(decision, Refusal):  # refused before a batch: claimed, then settled
            seen["refused"] += 1
            claimed = [(ClaimResult.CLAIMED, None)]
            assert decision.claim().message_id == decision.message_id
            for _delivery, messages in submitter.refuse([decision], claimed, now).items:
                seen["dead"] += any(m.exchange == "fuzz.sms.dead" for m in messages)
                _check_outgoing(messages)
            return
        assert isinstance(decision, Job)
        seen["jobs"] += 1
        sender = senders.get(decision.sender.name)
        assert sender is not None
        async def submit() -> SubmitResult:  # what _Session._submit does around the call
            decision.claim("fuzz").context.to_value()  # as the Redis claim encodes it
            return await submitter.call(sender, [decision], SecretStr("t"))

        result = asyncio.run(submit())
        assert not ics.problems, ics.problems[-1]
        for _delivery, messages in submitter.interpret(sender, [decision], result, now).items:
            _check_outgoing(messages)

    problems: list[str] = []
    try:
        check()
    except Exception as exc:
        problems.append(_failure(exc))
        raise
    finally:
        record(Row(scenario="fuzz: worker path", profile=profile, messages=seen["examples"],
                   problems=problems, figures={**seen, "max_examples": EXAMPLES[profile]}))


# -- the receipt endpoint -------------------------------------------------------------------

_events = st.sampled_from(["delivered", "failed", "clicked", "replied", "DELIVERED", "", "x"])
_codes = st.one_of(st.none(), st.sampled_from(["906", "901", ""]), st.integers(),
                   st.text(max_size=5))


@st.composite
def receipt_requests(draw: st.DrawFn, metas: list[str]) -> tuple[str, str, bytes, str]:
    """(method, content type, body, query string)."""
    meta = st.one_of(st.sampled_from(metas), st.text(max_size=30),
                     st.sampled_from([m.rpartition(".")[0] + ".AAAAAAAAAAA" for m in metas]))
    kind = draw(st.integers(0, 6))
    if kind <= 2:
        records = st.lists(st.fixed_dictionaries(
            {"ts": st.one_of(st.integers(-10, 2**64), st.floats(), st.text(max_size=5)),
             "meta": meta},
            optional={"code": _codes, "description": st.text(max_size=50),
                      "url": st.text(max_size=50), "shortUrl": st.text(max_size=20),
                      "extra": _json_values}), max_size=5)
        groups = draw(st.lists(st.fixed_dictionaries({"event": _events, "data": records}),
                               max_size=3))
        body = _dumps(groups if draw(st.integers(0, 5)) else (groups or [{}])[0])
        content_type = draw(st.sampled_from(["application/json", "text/plain", ""]))
        return "POST", content_type, body, ""
    operator = draw(st.fixed_dictionaries(
        {"smsgid": meta},
        optional={"status": st.sampled_from(["DELIVRD", "UNDELIV", "ACCEPTD", "expired", "x"]),
                  "err": st.text(max_size=40), "ts": st.text(max_size=12)}))
    encoded = urlencode(operator)
    if kind == 3:
        return "GET", "", b"", encoded
    if kind == 4:
        return "POST", "application/x-www-form-urlencoded", encoded.encode(), ""
    if kind == 5:
        boundary = "fuzzboundary"
        parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                        f"{v}\r\n" for k, v in operator.items())
        body = (parts + f"--{boundary}--\r\n").encode()
        return "POST", f"multipart/form-data; boundary={boundary}", body, ""
    content_type = draw(st.sampled_from(["application/json", "multipart/form-data",
                                         "application/x-www-form-urlencoded", "text/plain"]))
    return "POST", content_type, draw(st.binary(max_size=300)), ""


@pytest.mark.parametrize("profile", profiles())
def test_receipt_endpoint_never_answers_5xx(profile: str, make_stack: MakeStack) -> None:
    stack = make_stack("fuzz-receipts")
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=0, sandbox=None)
    sender = stack.senders.get("chaos-otp")
    assert sender is not None
    url = f"http://127.0.0.1:{stack.receiver_port}{sender.tracking_path()}"
    signer = SmsgidSigner(stack.secret)
    signed_ids = [f"fz-{i}" for i in range(20)]
    metas = [signer.sign(i, sender.name) for i in signed_ids]
    statuses: dict[int, int] = {}

    @_settings(profile)
    @given(request=receipt_requests(metas))
    @example(request=("POST", "multipart/form-data", b"", ""))  # found by this fuzz
    @example(request=("POST", "application/x-www-form-urlencoded", b"smsgid=\xff", ""))
    def check(request: tuple[str, str, bytes, str]) -> None:
        method, content_type, body, query = request
        headers = {"Content-Type": content_type} if content_type else {}
        status, answer = http_request(url + (f"?{query}" if query else ""), method,
                                      body if method == "POST" else None, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"answered {status}: {answer[:300]!r}"
        assert isinstance(json.loads(answer), dict), "the answer is not a JSON object"

    problems: list[str] = []
    try:
        check()
    except Exception as exc:
        problems.append(_failure(exc))
    strangers = sorted({m for m in ledger.snapshot_ids() if m not in signed_ids})
    if strangers:
        problems.append(f"events for forged smsgids: {strangers[:5]}")
    if http_request(f"http://127.0.0.1:{stack.receiver_port}/healthz")[0] != 200:
        problems.append("the receiver stopped answering")
    stack.stop_services()
    problems += stack.unclean_stops()
    row = record(Row(scenario="fuzz: receipt endpoint", profile=profile,
                     messages=sum(statuses.values()), problems=problems,
                     figures={"statuses": statuses, "events": ledger.snapshot()}))
    assert row.passed, "\n".join(row.problems)
