"""The ICS adapter: what ICS writes is redacted where it enters, before it goes anywhere;
a request that fails names the host and port it tried, never a secret.

An ICS that echoes the ``Authorization`` header or the ``dlrurl`` must not put the sender's
token or tracking token into logs, ``rejected`` events, dead-letter headers or retry copies.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from ics_sms.broker.base import Delivery
from ics_sms.schemas.ics import RecordResult
from ics_sms.schemas.messages import Status
from ics_sms.schemas.redact import SECRETS
from ics_sms.schemas.senders import Sender
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_ERROR, HEADER_REASON
from ics_sms.workers.encoding import analyse
from ics_sms.workers.ics import Batch, IcsClient, SubmitResult, match_answers
from ics_sms.workers.jobs import Job
from ics_sms.workers.outcomes import Outcomes
from ics_sms.workers.policy import AttemptPolicy, Disposition
from ics_sms.workers.submit import Submitter
from tests.workers.conftest import (
    SERVICE,
    FakeIcs,
    Pipeline,
    accept_all,
    request,
    running_worker,
    status,
)

TOKEN = SecretStr("ics-token-never-echo-42")
TRACKING = "Zq3vY8c1XkP0s-Ab_9tLmw"
DLRURL = f"https://hooks.example.com/ics/{TRACKING}/receipts"
CALLBACK_SECRET = "callback-secret-of-this-worker-0123456789"

Responder = Callable[[dict[str, Any]], web.Response]


def batch() -> Batch:
    record = IcsClient.record("+447700900123", "ACMEIN", "hello", "sg-1", None, None)
    return IcsClient.build("acme", [record], dlrurl=DLRURL, urlshortening=False)


@pytest.fixture
async def client(fake_ics: FakeIcs) -> AsyncIterator[IcsClient]:
    async with aiohttp.ClientSession() as http:
        yield IcsClient(http, fake_ics.url, timeout_s=10)


def echo(fake: FakeIcs, status: int, template: str) -> Responder:
    """ICS answering ``status`` with ``template`` filled from what it was sent."""
    def respond(body: dict[str, Any]) -> web.Response:
        text = template.format(auth=fake.auth[-1], dlrurl=body["dlrurl"],
                               escaped=body["dlrurl"].replace("/", "\\/"))
        return web.Response(status=status, text=text)

    return respond


def leaks(text: str | None) -> list[str]:
    return [s for s in (TOKEN.get_secret_value(), TRACKING, CALLBACK_SECRET)
            if text is not None and s in text]


@pytest.mark.parametrize(
    ("status", "template"),
    [
        (400, "bad request: Authorization: {auth} dlrurl={dlrurl}"),
        (401, '{{"error": "invalid credentials", "authorization": "{auth}"}}'),
        (500, '{{"echo": {{"dlrurl": "{escaped}"}}}}'),  # a JSON encoder escaping slashes
        (503, "upstream said: " + "." * 145 + "{dlrurl}"),  # the secret across the 200 cut
    ],
)
async def test_error_text_echoing_the_request_is_redacted(
    client: IcsClient, fake_ics: FakeIcs, status: int, template: str
) -> None:
    fake_ics.responders = [echo(fake_ics, status, template)]
    result = await client.submit(batch(), TOKEN)
    assert fake_ics.auth == [f"Bearer {TOKEN.get_secret_value()}"]  # the echo is real
    assert not result.ok and result.status == status
    assert result.reason.startswith(f"ICS answered HTTP {status}: ")
    assert leaks(result.reason) == []
    assert TRACKING[:8] not in result.reason  # not even the part before the cut
    assert len(result.reason) <= len(f"ICS answered HTTP {status}: ") + 200


async def test_record_answers_echoing_secrets_are_redacted(
    client: IcsClient, fake_ics: FakeIcs
) -> None:
    def answer(body: dict[str, Any]) -> web.Response:
        [record] = body["smstosend"]
        return web.json_response([
            {"to": record["to"], "smsgid": record["smsgid"], "from": fake_ics.auth[-1],
             "Error": f"refused; callback {body['dlrurl']} with {fake_ics.auth[-1]}"},
        ])

    fake_ics.responders = [answer]
    result = await client.submit(batch(), TOKEN)
    assert result.ok
    refused = result.results["sg-1"]
    assert not refused.accepted
    assert refused.error == "refused; callback https://hooks.example.com/ics/***/receipts with " \
                            "Bearer ***"
    assert leaks(refused.error) == leaks(refused.from_) == []


async def test_an_accepted_record_is_kept_as_ics_wrote_it(
    client: IcsClient, fake_ics: FakeIcs
) -> None:
    result = await client.submit(batch(), TOKEN)
    answer = result.results["sg-1"]
    assert (answer.accepted, answer.mid, answer.to) == (True, "mid-sg-1", "447700900123")


async def test_secrets_the_process_knows_are_redacted_from_ics_text(
    client: IcsClient, fake_ics: FakeIcs
) -> None:
    SECRETS.add(CALLBACK_SECRET)  # what `ics-sms worker` does when it reads its settings
    fake_ics.responders = [lambda _body: web.Response(status=422, text=CALLBACK_SECRET)]
    result = await client.submit(batch(), TOKEN)
    assert result.disposition is Disposition.REJECT
    assert result.reason == "ICS answered HTTP 422: ***"


# -- through the worker: events and dead letters -----------------------------------------


async def test_rejected_events_and_dead_letters_carry_no_echoed_secret(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [echo(fake_ics, 400, "bad request {auth} {dlrurl}")]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert SERVICE.token is not None
    secrets = [SERVICE.token.get_secret_value(), SERVICE.tracking_token]
    assert all(secret in fake_ics.requests[0]["dlrurl"] + fake_ics.auth[0]
               for secret in secrets)  # the double did echo them
    assert event.status is Status.REJECTED
    assert event.error == "ICS answered HTTP 400: bad request Bearer *** " \
                          "http://127.0.0.1:8080/ics/***/receipts"
    assert dead.headers[HEADER_REASON] == "ics_refused"
    published = [event.model_dump_json(), str(dead.headers[HEADER_ERROR])]
    assert not [s for s in secrets for text in published if s in text]


async def test_retry_copies_carry_no_echoed_secret(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    fake_ics.responders = [echo(fake_ics, 503, "overloaded, retry {auth} {dlrurl}")]
    await pipeline.publish(request(1))
    async with running_worker(worker_settings):
        [event] = await pipeline.next_events(1)
        [dead] = await pipeline.next_dead(1)
    assert len(fake_ics.requests) == worker_settings.max_attempts  # every retry echoed
    assert event.status is Status.FAILED
    assert SERVICE.token is not None
    for secret in (SERVICE.token.get_secret_value(), SERVICE.tracking_token):
        assert secret not in (event.error or "")
        assert secret not in str(dead.headers)


# -- where it tried --------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def unreachable_reason(base_url: str) -> str:
    async with aiohttp.ClientSession() as session:
        result = await IcsClient(session, base_url, timeout_s=5).submit(batch(), TOKEN)
    assert result.disposition is Disposition.RETRY
    assert result.reason is not None
    return result.reason


async def test_an_unreachable_ics_is_named_by_host_and_port() -> None:
    port = closed_port()
    reason = await unreachable_reason(f"http://127.0.0.1:{port}")
    assert reason.startswith(f"ICS unreachable at 127.0.0.1:{port}: Client"), reason


@pytest.mark.parametrize(
    ("base_url", "where"),
    [("https://ics.invalid/api?key=url-KEY", "ics.invalid:443"),
     ("http://ics.invalid", "ics.invalid:80")],
)
async def test_the_reason_holds_host_and_port_only(base_url: str, where: str) -> None:
    reason = await unreachable_reason(base_url)
    assert reason.startswith(f"ICS unreachable at {where}: "), reason
    assert "url-KEY" not in reason
    assert leaks(reason) == []


# -- what a failed request means: the table, through real sockets -------------------------


class RawIcs:
    """A TCP server that reads one whole HTTP request per connection, then answers with
    ``reply`` (raw bytes), closes (``"close"``), resets (``"reset"``) or holds the
    connection until :attr:`release` is set (``"hang"``)."""

    def __init__(self) -> None:
        self.reply: bytes | str = b""
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        self.received.set()
        if self.reply == "hang":
            await self.release.wait()
        elif self.reply == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif isinstance(self.reply, bytes):
            writer.write(self.reply)
            await writer.drain()
        writer.close()


@pytest.fixture
async def raw_ics() -> AsyncIterator[RawIcs]:
    raw = RawIcs()
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    yield raw
    raw.release.set()
    server.close()
    await server.wait_closed()


def http(status: int, body: str, content_type: str = "application/json",
         length: int | None = None, headers: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{headers}"
            f"Content-Length: {len(data) if length is None else length}\r\n"
            f"Connection: close\r\n\r\n").encode() + data


PROXY_PAGE = "<html><body><h1>Bad Gateway</h1>nginx</body></html>"

U, R = Disposition.UNCERTAIN, Disposition.RETRY


@pytest.mark.parametrize(("what", "reply", "disposition"), [
    # ICS may have accepted some or all records
    ("timeout after the request was written", "hang", U),
    ("connection closed after the request", "close", U),
    ("connection reset after the request", "reset", U),
    ("5xx from ICS", http(500, '{"error": "internal"}'), U),
    ("5xx page from a gateway", http(504, PROXY_PAGE, "text/html"), U),
    ("200 with an HTML body", http(200, PROXY_PAGE, "text/html"), U),
    ("200 with HTML labelled JSON", http(200, PROXY_PAGE), U),
    ("200 with a JSON object", http(200, '{"status": "queued"}'), U),
    ("200 cut short", http(200, '[{"smsgid": "sg-1", "mid": "m', length=200), U),
    ("202 accepted", http(202, ""), U),
    # ICS did not take the request
    ("404 from a proxy", http(404, PROXY_PAGE, "text/html"), R),
    ("404 in JSON", http(404, '{"message": "no route"}'), R),
    ("400 page from a proxy", http(400, PROXY_PAGE, "text/html"), R),
    ("405 in plain text", http(405, "method not allowed", "text/plain"), R),
    ("408 request timeout", http(408, ""), R),
    # the sender
    ("429 throttled", http(429, '{"error": "slow down"}', headers="Retry-After: 7\r\n"),
     Disposition.THROTTLED),
    ("401 credentials", http(401, '{"error": "bad token"}'), Disposition.PAUSE_SENDER),
    ("403 forbidden", http(403, PROXY_PAGE, "text/html"), Disposition.PAUSE_SENDER),
    # ICS's verdict on the request
    ("400 from ICS", http(400, '{"error": "invalid template"}'), Disposition.REJECT),
    ("400 from ICS in plain text", http(400, "invalid template", "text/plain"),
     Disposition.REJECT),
    ("422 from ICS", http(422, '{"error": "invalid dlrurl"}'), Disposition.REJECT),
])
async def test_what_a_failed_request_means(
    raw_ics: RawIcs, what: str, reply: bytes | str, disposition: Disposition
) -> None:
    raw_ics.reply = reply
    async with aiohttp.ClientSession() as session:
        client = IcsClient(session, f"http://127.0.0.1:{raw_ics.port}", timeout_s=1.0)
        result = await client.submit(batch(), TOKEN)
    assert raw_ics.received.is_set()  # every row here reached the server
    assert result.disposition is disposition, (what, result.reason)
    assert result.disposition_of("sg-1") is disposition
    if disposition is Disposition.THROTTLED:
        assert result.retry_after_s == 7


@pytest.mark.parametrize("what", ["connection refused", "DNS failure", "connect timeout"])
async def test_a_request_ics_never_got_is_retried(raw_ics: RawIcs, what: str) -> None:
    """Connection refused, a name that does not resolve, or no connection in time (here:
    the only pooled connection held by a request ICS sits on) stay RETRY."""
    urls = {"connection refused": f"http://127.0.0.1:{closed_port()}",
            "DNS failure": "http://ics.invalid",
            "connect timeout": f"http://127.0.0.1:{raw_ics.port}"}
    raw_ics.reply = "hang"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        client = IcsClient(session, urls[what], timeout_s=1.0)
        holder = None
        if what == "connect timeout":
            holder = asyncio.create_task(client.submit(batch(), TOKEN))
            await raw_ics.received.wait()
        result = await client.submit(batch(), TOKEN)
        raw_ics.release.set()
        if holder is not None:
            assert (await holder).disposition is Disposition.UNCERTAIN
    assert result.disposition is Disposition.RETRY, result.reason
    assert result.reason.startswith("ICS unreachable at "), result.reason


# -- matching answers to records ------------------------------------------------------------


def answer(smsgid: str | None, mid: str | None = None, error: str | None = None
           ) -> RecordResult:
    return RecordResult(smsgid=smsgid, mid=mid if mid or error else f"mid-{smsgid}",
                        error=error)


IDS = ["m1.Q2hLx_9a", "m2.zzTOP-1b", "m3.AbCdEf0c"]


def mids(results: dict[str, RecordResult]) -> dict[str, str | None]:
    return {smsgid: result.mid for smsgid, result in results.items()}


@pytest.mark.parametrize("change", [str.lower, str.upper, str.swapcase])
def test_an_echo_in_another_case_matches_its_record(change: Callable[[str], str]) -> None:
    answers = [answer(change(s), mid=f"x{i}") for i, s in enumerate(reversed(IDS))]
    assert mids(match_answers(IDS, answers[:2])) == {IDS[2]: "x0", IDS[1]: "x1"}


def test_answers_without_a_usable_echo_match_by_position_when_the_count_agrees() -> None:
    answers = [answer(None, mid="a"), answer("ics-own-id-7", mid="b"), answer(IDS[2], mid="c")]
    assert mids(match_answers(IDS, answers)) == dict(zip(IDS, "abc", strict=True))


def test_no_position_without_the_same_count() -> None:
    answers = [answer(None, mid="a"), answer(IDS[1].lower(), mid="b")]
    assert mids(match_answers(IDS, answers)) == {IDS[1]: "b"}  # IDS[0] stays unanswered


def test_no_position_when_the_echoes_show_another_order() -> None:
    answers = [answer(IDS[1], mid="b"), answer(None, mid="?"), answer(IDS[2], mid="c")]
    assert mids(match_answers(IDS, answers)) == {IDS[1]: "b", IDS[2]: "c"}


COLLIDING = ["m1.Ab_x", "m1.aB_x", "m2.Zz9y"]  # the first two fold to the same id


def test_ids_that_fold_alike_match_only_by_position() -> None:
    lowered = [answer(s.lower(), mid=f"x{i}") for i, s in enumerate(COLLIDING)]
    assert mids(match_answers(COLLIDING, lowered)) == {
        COLLIDING[0]: "x0", COLLIDING[1]: "x1", COLLIDING[2]: "x2"}
    # without the position, even an exact echo of either is ambiguous (a lower-casing ICS
    # writes "m1.ab_x" for both): neither gets an answer, the other one does
    assert mids(match_answers(COLLIDING, [lowered[1], lowered[2]])) == {COLLIDING[2]: "x2"}
    assert mids(match_answers(COLLIDING, [answer("m1.aB_x", mid="e")])) == {}


def test_a_record_two_different_answers_claim_keeps_neither() -> None:
    answers = [answer(IDS[0], mid="a"), answer(IDS[0].lower(), error="Invalid mobile"),
               answer(IDS[1], mid="b")]
    assert mids(match_answers(IDS, answers)) == {IDS[1]: "b"}
    repeated = [answer(IDS[0], mid="a"), answer(IDS[0], mid="a")]
    assert mids(match_answers(IDS, repeated)) == {IDS[0]: "a"}


@pytest.mark.parametrize("seed", range(30))
def test_no_answer_is_given_to_two_records(seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"m{i}.{rng.choice(['Ab', 'aB', 'AB', 'cd'])}" for i in range(4)] + COLLIDING
    echoes = [rng.choice([None, "junk", *ids, *(s.lower() for s in ids)]) for _ in ids]
    answers = [answer(e, mid=f"a{i}") for i, e in enumerate(echoes[: rng.randint(0, len(ids))])]
    results = match_answers(ids, answers)
    used = [result.mid for result in results.values()]
    assert len(used) == len(set(used))
    assert set(results) <= set(ids)


async def test_a_lower_cased_echo_through_the_client(
    client: IcsClient, fake_ics: FakeIcs
) -> None:
    def lowered(body: dict[str, Any]) -> web.Response:
        return web.json_response([{"smsgid": r["smsgid"].lower(), "mid": "mid-1"}
                                  for r in body["smstosend"]])

    fake_ics.responders = [lowered]
    record = IcsClient.record("+447700900123", "ACMEIN", "hi", "m1.Q2hLx_9a", None, None)
    result = await client.submit(
        IcsClient.build("acme", [record], dlrurl=DLRURL, urlshortening=False), TOKEN)
    assert mids(result.results) == {"m1.Q2hLx_9a": "mid-1"}


async def test_a_worker_sends_once_when_ics_lower_cases_the_echo(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    """Was 10 sends per message: every lower-cased echo read as a missing answer."""
    def lowered(body: dict[str, Any]) -> web.Response:
        return web.json_response([{"to": r["to"], "smsgid": r["smsgid"].lower(),
                                   "mid": f"mid-{r['smsgid']}"} for r in body["smstosend"]])

    fake_ics.responders = [lowered]
    await pipeline.publish(*(request(i) for i in range(5)))
    async with running_worker(worker_settings):
        events = await pipeline.next_events(5)
    assert [e.status for e in events] == [Status.SUBMITTED] * 5
    assert len(fake_ics.records) == 5


# -- one bad record does not sink a batch ---------------------------------------------------


def poisoned_ics(fake: FakeIcs, *, bad: Callable[[dict[str, Any]], bool],
                 other: Callable[[dict[str, Any]], web.Response | None] | None = None
                 ) -> None:
    """ICS refusing (400, its own error body) any request holding a record ``bad`` picks;
    ``other`` may answer a request first."""
    def respond(body: dict[str, Any]) -> web.Response:
        scripted = other(body) if other else None
        if scripted is not None:
            return scripted
        if any(bad(record) for record in body["smstosend"]):
            return web.json_response({"error": "template not approved"}, status=400)
        return accept_all(body)

    fake.responders = [respond]


def jobs(count: int, sender: Sender = SERVICE) -> list[Job]:
    made = []
    for i in range(count):
        req = request(i)
        delivery = Delivery(body=b"", exchange="x", routing_key="service", tag=i,
                            redelivered=False, generation=0, queue="q")
        made.append(Job(delivery=delivery, request=req, sender=sender, attempt=1, parked=0,
                        smsgid=f"sg-{i}", info=analyse(req.text), text=req.text, links={}))
    return made


@pytest.fixture
async def submitter(fake_ics: FakeIcs) -> AsyncIterator[Submitter]:
    settings = Settings(broker_url=SecretStr("memory://split"), namespace="split.",
                        callback_secret=SecretStr(CALLBACK_SECRET), redis_url="memory://")
    async with aiohttp.ClientSession() as http:
        yield Submitter(settings, IcsClient(http, fake_ics.url, timeout_s=10),
                        Outcomes(settings.topology), AttemptPolicy())


def smsgids(fake: FakeIcs, index: int) -> list[str]:
    return [record["smsgid"] for record in fake.requests[index]["smstosend"]]


def refused(result: SubmitResult) -> dict[str, str | None]:
    return {s: a.error for s, a in result.results.items() if not a.accepted}


@pytest.mark.parametrize(("count", "bad"), [(64, {37}), (1000, {0}), (7, {6}), (2, {1})])
async def test_a_refused_request_is_split_until_only_the_bad_record_is_refused(
    submitter: Submitter, fake_ics: FakeIcs, count: int, bad: set[int]
) -> None:
    poisoned = {f"sg-{i}" for i in bad}
    poisoned_ics(fake_ics, bad=lambda record: record["smsgid"] in poisoned)
    result = await submitter.call(SERVICE, jobs(count), TOKEN)
    assert result.ok
    assert refused(result) == dict.fromkeys(
        poisoned, 'ICS answered HTTP 400: {"error": "template not approved"}')
    accepted = {s for s, a in result.results.items() if a.accepted}
    assert accepted == {f"sg-{i}" for i in range(count)} - poisoned
    depth = math.ceil(math.log2(count))
    assert len(fake_ics.requests) == result.requests <= 1 + 2 * depth  # one path down
    assert len(fake_ics.records) - count <= 2 * count  # each level re-sends a record once
    assert all(result.disposition_of(s) is None for s in accepted | poisoned)


async def test_two_bad_records_in_one_batch_are_both_isolated(
    submitter: Submitter, fake_ics: FakeIcs
) -> None:
    poisoned = {"sg-3", "sg-900"}
    poisoned_ics(fake_ics, bad=lambda record: record["smsgid"] in poisoned)
    result = await submitter.call(SERVICE, jobs(1000), TOKEN)
    assert set(refused(result)) == poisoned
    assert sum(a.accepted for a in result.results.values()) == 998
    assert len(fake_ics.requests) <= 1 + Submitter.split_budget(1000) == 41


async def test_a_request_ics_refuses_whatever_it_holds_costs_a_bounded_number_of_requests(
    submitter: Submitter, fake_ics: FakeIcs
) -> None:
    """E.g. a wrong account name: every request is refused. The split stops at its budget;
    records it isolated are refused, the rest are RETRY (ICS took none of them)."""
    poisoned_ics(fake_ics, bad=lambda _record: True)
    result = await submitter.call(SERVICE, jobs(1000), TOKEN)
    assert len(fake_ics.requests) == result.requests <= 1 + Submitter.split_budget(1000)
    assert not any(a.accepted for a in result.results.values())
    retried = {s for s in (f"sg-{i}" for i in range(1000))
               if result.disposition_of(s) is Disposition.RETRY}
    assert retried | set(refused(result)) == {f"sg-{i}" for i in range(1000)}
    assert "not isolated within 40 requests" in result.reason_of(sorted(retried)[0])


async def test_a_single_refused_record_is_refused_in_one_request(
    submitter: Submitter, fake_ics: FakeIcs
) -> None:
    poisoned_ics(fake_ics, bad=lambda _record: True)
    result = await submitter.call(SERVICE, jobs(1), TOKEN)
    assert result.disposition is Disposition.REJECT and len(fake_ics.requests) == 1


async def test_a_half_that_may_have_been_accepted_is_not_split_or_sent_again(
    submitter: Submitter, fake_ics: FakeIcs
) -> None:
    """sg-0..1 answered 500 (ICS may have sent them); sg-3 is the bad record."""
    def gateway_error(body: dict[str, Any]) -> web.Response | None:
        first = body["smstosend"][0]["smsgid"] == "sg-0" and len(body["smstosend"]) == 2
        return web.json_response({"error": "upstream"}, status=500) if first else None

    poisoned_ics(fake_ics, bad=lambda record: record["smsgid"] == "sg-3", other=gateway_error)
    result = await submitter.call(SERVICE, jobs(4), TOKEN)
    assert [smsgids(fake_ics, i) for i in range(len(fake_ics.requests))] == [
        ["sg-0", "sg-1", "sg-2", "sg-3"], ["sg-0", "sg-1"], ["sg-2", "sg-3"], ["sg-2"],
        ["sg-3"]]
    assert [result.disposition_of(f"sg-{i}") for i in range(4)] == [
        Disposition.UNCERTAIN, Disposition.UNCERTAIN, None, None]
    assert result.reason_of("sg-0").startswith("ICS answered HTTP 500")
    assert result.results["sg-2"].accepted and not result.results["sg-3"].accepted


async def test_credentials_refused_during_a_split_pause_the_sender(
    submitter: Submitter, fake_ics: FakeIcs
) -> None:
    def refuse_token(body: dict[str, Any]) -> web.Response | None:
        return status(401)(body) if len(fake_ics.requests) > 1 else None

    poisoned_ics(fake_ics, bad=lambda _record: True, other=refuse_token)
    result = await submitter.call(SERVICE, jobs(8), TOKEN)
    assert result.disposition is Disposition.PAUSE_SENDER
    assert len(fake_ics.requests) == 3  # the refused request and its two halves, no more


async def test_a_worker_rejects_only_the_bad_message_of_a_batch(
    pipeline: Pipeline, fake_ics: FakeIcs, worker_settings: Settings
) -> None:
    """Was: every message of the batch rejected for good with the request's 400."""
    poisoned_ics(fake_ics, bad=lambda record: record["smstext"] == "hello 7")
    await pipeline.publish(*(request(i) for i in range(20)))
    async with running_worker(worker_settings):
        events = {e.message_id: e for e in await pipeline.next_events(20)}
    assert events.pop("m7").status is Status.REJECTED
    assert {e.status for e in events.values()} == {Status.SUBMITTED}
    accepted = [r["smstext"] for r in fake_ics.records]
    assert "hello 7" in accepted  # it was sent, and refused
    assert len(fake_ics.requests) <= 20 * (1 + Submitter.split_budget(20))
