"""The ICS adapter: what ICS writes is redacted where it enters, before it goes anywhere;
a request that fails names the host and port it tried, never a secret.

An ICS that echoes the ``Authorization`` header or the ``dlrurl`` must not put the sender's
token or tracking token into logs, ``rejected`` events, dead-letter headers or retry copies.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from ics_sms.schemas.messages import Status
from ics_sms.schemas.redact import SECRETS
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import HEADER_ERROR, HEADER_REASON
from ics_sms.workers.ics import Batch, IcsClient
from ics_sms.workers.policy import Disposition
from tests.workers.conftest import SERVICE, FakeIcs, Pipeline, request, running_worker

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
