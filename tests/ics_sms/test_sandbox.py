"""The ICS sandbox: speaks ICS_API.md, answers test numbers deterministically, posts receipts.

Every test runs a real sandbox on 127.0.0.1 (port 0) and, where receipts matter, a small
aiohttp receiver; waits are on events with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner
from pydantic import SecretStr

from ics_sms.cli import sandbox_cmd
from ics_sms.cli.common import CliError
from ics_sms.cli.sandbox_cmd import collect_accounts, sandbox_command
from ics_sms.sandbox import (
    ALWAYS_CLICKED,
    ALWAYS_DELIVERED,
    FAILING_PREFIX,
    NEVER_RECEIPTED,
    REFUSED,
    SERVER_ERROR,
    RunningSandbox,
    SandboxConfig,
    running_sandbox,
    start_sandbox,
)
from ics_sms.sandbox.faults import ThrottleBucket
from ics_sms.sandbox.outcomes import decide
from ics_sms.schemas.ics import FAILURE_CODES, ReceiptData, datasend_response, receipt_groups
from ics_sms.schemas.senders import Sender, Senders, SenderType

USER, TOKEN = "acme", "tok-acme-0123456789"
OTHER_USER, OTHER_TOKEN = "other", "tok-other-9876543210"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PEID, TEMPLATE = "1201159100000000000", "1207161000000000000"
TIMEOUT_S = 5


def basic(user: str, password: str) -> dict[str, str]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def record(to: str, smsgid: str, text: str = "Your OTP is 4821", **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"to": to, "from": "ACMEIN", "smstext": text, "smsgid": smsgid}
    if to.startswith("91"):
        fields.update(peid=PEID, templateid=TEMPLATE)
    return {**fields, **extra}


def datasend(*records: dict[str, Any], dlrurl: str | None = None, urlshortening: int = 0,
             user: str = USER, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user, "allowunicode": True, "urlshortening": urlshortening,
                            "smstosend": list(records), **extra}
    if dlrurl is not None:
        body["dlrurl"] = dlrurl
    return body


# -- fixtures ------------------------------------------------------------------------------


class Receiver:
    """A delivery tracking URL: records every POST, answers from a script (default 200)."""

    def __init__(self) -> None:
        self.answers: deque[int] = deque()
        self.posts: list[tuple[int, list[Any]]] = []
        self.receipts: list[tuple[str, ReceiptData]] = []
        self.url = ""
        self._changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answers.popleft() if self.answers else 200
        self.posts.append((status, orjson.loads(body)))
        if status == 200:
            for group in receipt_groups.validate_json(body):
                for item in group.data:
                    self.receipts.append((group.event, ReceiptData.model_validate(item)))
        self._changed.set()
        return web.json_response({"status": "success", "processed": 0, "unprocessed": []},
                                 status=status)

    async def wait_for(self, count: int) -> list[tuple[str, ReceiptData]]:
        async with asyncio.timeout(TIMEOUT_S):
            while len(self.receipts) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.receipts

    def by_event(self) -> dict[str, dict[str, ReceiptData]]:
        result: dict[str, dict[str, ReceiptData]] = {}
        for event, data in self.receipts:
            result.setdefault(event, {})[data.meta] = data
        return result


@asynccontextmanager
async def serving(receiver: Receiver, port: int = 0) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/ics/receipts", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{bound}/ics/receipts"
    try:
        yield bound
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver):
        yield receiver


Starter = Callable[..., Awaitable[RunningSandbox]]


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    """Start a sandbox with fast test settings; ``start(**overrides)``."""
    started: list[RunningSandbox] = []

    async def _start(**overrides: Any) -> RunningSandbox:
        fields: dict[str, Any] = {
            "accounts": {USER: SecretStr(TOKEN), OTHER_USER: SecretStr(OTHER_TOKEN)},
            "seed": 7, "receipt_delay_ms": 0, "receipt_flush_ms": 1, "click_delay_ms": 0,
            "receipt_retry_base_ms": 1, "receipt_retry_cap_ms": 5, **overrides,
        }
        sandbox = await start_sandbox(SandboxConfig(**fields))
        started.append(sandbox)
        return sandbox

    yield _start
    for sandbox in started:
        await sandbox.close()


@pytest.fixture
async def sandbox(start: Starter) -> RunningSandbox:
    return await start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, sandbox: RunningSandbox, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(sandbox.datasend_url, data=data,
                         headers=BEARER if headers is None else headers) as response:
        return response.status, orjson.loads(await response.read()), response.headers


async def control(http: aiohttp.ClientSession, sandbox: RunningSandbox,
                  **change: Any) -> tuple[int, Any]:
    async with http.post(f"{sandbox.url}/_control", json=change) as response:
        return response.status, await response.json()


async def stats(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> dict[str, Any]:
    async with http.get(f"{sandbox.url}/_stats") as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [BEARER, basic(USER, TOKEN)], ids=["bearer", "basic"])
async def test_good_credentials_are_accepted(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    status, answer, _ = await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1")),
                                   headers)
    assert status == 200
    assert answer[0]["smsgid"] == "m1"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer "},
        basic(USER, "wrong-password"),
        basic("nobody", TOKEN),
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": f"Token {TOKEN}"},
    ],
    ids=["missing", "wrong-bearer", "empty-bearer", "wrong-password", "unknown-user",
         "bad-base64", "unknown-scheme"],
)
async def test_bad_credentials_are_401_and_never_echo_a_token(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    status, answer, _ = await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1")),
                                   headers)
    assert status == 401
    assert "error" in answer
    assert TOKEN not in orjson.dumps(answer).decode()
    assert (await stats(http, sandbox))["records_accepted"] == 0


async def test_token_of_another_user_is_403(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    headers = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    status, _, _ = await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1")), headers)
    assert status == 403


async def test_sandbox_without_accounts_accepts_any_credentials(
    http: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(SandboxConfig()) as sandbox:
        body = datasend(record(ALWAYS_DELIVERED, "m1"))
        assert (await post(http, sandbox, body, {"Authorization": "Bearer anything"}))[0] == 200
        assert (await post(http, sandbox, body, basic(USER, "any")))[0] == 200
        assert (await post(http, sandbox, body, basic("someone-else", "any")))[0] == 403
        assert (await post(http, sandbox, body, {}))[0] == 401


# -- per-record answers --------------------------------------------------------------------


async def test_answer_has_one_entry_per_record_in_order(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    records = [
        record(ALWAYS_DELIVERED, "ok-1"),
        record(REFUSED, "barred"),
        record(FAILING_PREFIX + "906", "ok-2"),
        record("+919000000001", "plus-sign"),
        record("919812345678", "no-dlt", peid=None, templateid=None),
        record("9112345678", "short-indian"),
        record(ALWAYS_DELIVERED, "empty-text", text=""),
        record(ALWAYS_DELIVERED, "blank-text", text="   "),
        record("447700900123", "uk-needs-no-dlt"),
        5,
    ]
    status, answer, _ = await post(http, sandbox, datasend(*records))
    assert status == 200
    results = datasend_response.validate_python(answer)
    assert [r.smsgid for r in results] == [
        "ok-1", "barred", "ok-2", "plus-sign", "no-dlt", "short-indian", "empty-text",
        "blank-text", "uk-needs-no-dlt", None,
    ]
    assert [r.accepted for r in results] == [
        True, False, True, False, False, False, False, False, True, False,
    ]
    errors = {r.smsgid: r.error for r in results if not r.accepted}
    assert errors == {
        "barred": "number barred (sandbox test number)",
        "plus-sign": "invalid destination: country code + national number, digits only",
        "no-dlt": "DLT template/entity missing",
        "short-indian": "invalid Indian mobile number",
        "empty-text": "message text missing or empty",
        "blank-text": "message text missing or empty",
        None: "malformed record",
    }
    accepted = [r for r in results if r.accepted]
    assert all(r.mid and r.from_ == "ACMEIN" for r in accepted)
    assert len({r.mid for r in accepted}) == len(accepted)
    assert "Error" not in answer[0] and "mid" not in answer[1]
    counters = await stats(http, sandbox)
    assert (counters["records_accepted"], counters["records_refused"]) == (3, 7)


async def test_every_record_refused_still_answers_200(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    status, answer, _ = await post(http, sandbox, datasend(record("12", "a"), record("x", "b")))
    assert status == 200
    assert [entry["smsgid"] for entry in answer] == ["a", "b"]
    assert all("Error" in entry for entry in answer)


async def test_unicode_text_is_refused_when_allowunicode_is_false(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    body = datasend(record(ALWAYS_DELIVERED, "hi", text="\u0928\u092e\u0938\u094d\u0924\u0947"),
                    record(ALWAYS_DELIVERED, "en", text="Hello"), allowunicode=False)
    status, answer, _ = await post(http, sandbox, body)
    assert status == 200
    assert "allowunicode" in answer[0]["Error"]
    assert "mid" in answer[1]


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"[]",
        orjson.dumps({"smstosend": [record(ALWAYS_DELIVERED, "m1")]}),
        orjson.dumps(datasend()),
        orjson.dumps(datasend(*[record(ALWAYS_DELIVERED, f"m{i}") for i in range(1001)])),
        orjson.dumps(datasend(record(ALWAYS_DELIVERED, "m1"), urlshortening=2)),
        orjson.dumps(datasend(record(ALWAYS_DELIVERED, "m1"), dlrurl="ftp://hooks.example/x")),
        orjson.dumps(datasend(record("12", "m1"), dlrurl="http://[::1")),
    ],
    ids=["garbage", "array", "no-user", "no-records", "1001-records", "bad-urlshortening",
         "ftp-dlrurl", "broken-dlrurl-all-refused"],
)
async def test_malformed_body_is_400_with_reasons(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, body: bytes
) -> None:
    status, answer, _ = await post(http, sandbox, body)
    assert status == 400
    assert answer["reasons"]


async def test_server_error_number_fails_the_whole_request(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    body = datasend(record(ALWAYS_DELIVERED, "m1"), record(SERVER_ERROR, "m2"))
    status, _, _ = await post(http, sandbox, body)
    assert status == 500
    counters = await stats(http, sandbox)
    assert counters["records_accepted"] == 0
    assert counters["responses"] == {"500": 1}


async def test_duplicate_smsgids_are_counted(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "a"),
                                       record(ALWAYS_DELIVERED, "b")))
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "a")))
    await post(http, sandbox, datasend(record(REFUSED, "b")))  # refused: not a submission
    counters = await stats(http, sandbox)
    assert counters["records_accepted"] == 3
    assert counters["duplicate_smsgids"] == 1


# -- faults --------------------------------------------------------------------------------


async def test_throttle_answers_429_with_retry_after(
    http: aiohttp.ClientSession, start: Starter
) -> None:
    sandbox = await start(throttle_per_s=5)
    five = datasend(*[record(ALWAYS_DELIVERED, f"m{i}") for i in range(5)])
    assert (await post(http, sandbox, five))[0] == 200
    status, answer, headers = await post(http, sandbox, five)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert answer["retry_after_ms"] > 0


async def test_throttle_set_at_run_time(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    status, knobs = await control(http, sandbox, throttle_per_s=1)
    assert (status, knobs["throttle_per_s"]) == (200, 1)
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "a"))))[0] == 200
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "b"))))[0] == 429
    await control(http, sandbox, throttle_per_s=0)
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "c"))))[0] == 200


async def test_outage_started_and_ended_through_control(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    body = datasend(record(ALWAYS_DELIVERED, "m1"))
    status, knobs = await control(http, sandbox, outage_s=60)
    assert status == 200 and knobs["outage_left_s"] > 59
    assert (await post(http, sandbox, body))[0] == 503
    await control(http, sandbox, outage_s=0)
    assert (await post(http, sandbox, body))[0] == 200


async def test_configured_outage_from_start(
    http: aiohttp.ClientSession, start: Starter
) -> None:
    sandbox = await start(outage_s=60)
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"))))[0] == 503


async def test_error_rate_gives_5xx_answers(
    http: aiohttp.ClientSession, start: Starter
) -> None:
    sandbox = await start(error_rate=1.0)
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"))))[0] == 500
    await control(http, sandbox, error_rate=0.0)
    assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"))))[0] == 200


async def test_control_refuses_unknown_or_out_of_range_knobs(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    assert (await control(http, sandbox, colour="red"))[0] == 400
    assert (await control(http, sandbox, error_rate=2))[0] == 400
    async with http.get(f"{sandbox.url}/_control") as response:
        assert (await response.json())["error_rate"] == 0


async def test_token_rotated_through_control_refuses_the_old_one(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token regenerated on the portal: the new one works, the old one is 401, the other
    users are untouched, and neither token is echoed."""
    new = "tok-acme-rotated-4242424242"
    body = datasend(record(ALWAYS_DELIVERED, "m1"))
    status, knobs = await control(http, sandbox, accounts={USER: new, "late": "tok-late-77"})
    assert status == 200
    assert knobs["accounts"] == sorted([USER, OTHER_USER, "late"])
    assert TOKEN not in str(knobs) and new not in str(knobs)
    assert (await post(http, sandbox, body))[0] == 401
    assert (await post(http, sandbox, body, basic(USER, TOKEN)))[0] == 401
    assert (await post(http, sandbox, body, {"Authorization": f"Bearer {new}"}))[0] == 200
    assert (await post(http, sandbox, body, basic(USER, new)))[0] == 200
    other = datasend(record(ALWAYS_DELIVERED, "m2"), user=OTHER_USER)
    assert (await post(http, sandbox, other, basic(OTHER_USER, OTHER_TOKEN)))[0] == 200
    logged = capsys.readouterr()
    logged_text = logged.out + logged.err
    assert "sandbox.control" in logged_text and "late" in logged_text
    assert new not in logged_text and "tok-late-77" not in logged_text
    assert (await control(http, sandbox, accounts={USER: ""}))[0] == 400
    assert (await control(http, sandbox, accounts={"": "x"}))[0] == 400


# -- receipts ------------------------------------------------------------------------------


async def test_receipts_are_posted_to_the_dlrurl(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    smsgids = {"delivered": "msg-1.Ab_c-9", "dnd": "msg-2.xY", "header": "msg-3.zz"}
    body = datasend(record(ALWAYS_DELIVERED, smsgids["delivered"]),
                    record(FAILING_PREFIX + "901", smsgids["dnd"]),
                    record(FAILING_PREFIX + "906", smsgids["header"]), dlrurl=receiver.url)
    assert (await post(http, sandbox, body))[0] == 200
    await receiver.wait_for(3)
    events = receiver.by_event()
    assert set(events["delivered"]) == {smsgids["delivered"]}
    failed = events["failed"]
    assert {meta: data.code for meta, data in failed.items()} == {
        smsgids["dnd"]: "901", smsgids["header"]: "906"}
    assert failed[smsgids["header"]].description == FAILURE_CODES["906"]
    assert all(data.ts > 1_700_000_000 for _, data in receiver.receipts)
    counters = await stats(http, sandbox)
    assert counters["receipts_posted"] == 3
    assert counters["receipts_posted_by_event"] == {"delivered": 1, "failed": 2}


async def test_clicked_receipts_only_with_urlshortening_and_a_url(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    link_text = "Sale! https://shop.example/sale?id=7."
    await post(http, sandbox, datasend(record(ALWAYS_CLICKED, "plain", link_text),
                                       dlrurl=receiver.url))
    await post(http, sandbox, datasend(record(ALWAYS_CLICKED, "short", link_text),
                                       record(ALWAYS_CLICKED, "nolink", "No link here"),
                                       dlrurl=receiver.url, urlshortening=1))
    async with asyncio.timeout(TIMEOUT_S):
        await sandbox.wait_receipts_posted()
    events = receiver.by_event()
    assert set(events["delivered"]) == {"plain", "short", "nolink"}
    assert set(events["clicked"]) == {"short"}
    click = events["clicked"]["short"]
    assert click.url == "https://shop.example/sale?id=7"
    assert click.short_url is not None and click.short_url.startswith("https://")


async def test_click_ratio_governs_ordinary_numbers(
    http: aiohttp.ClientSession, start: Starter, receiver: Receiver
) -> None:
    sandbox = await start(click_ratio=1.0, delivery_ratio=1.0)
    body = datasend(record("919812345678", "m1", "see https://a.example"), dlrurl=receiver.url,
                    urlshortening=1)
    await post(http, sandbox, body)
    await receiver.wait_for(2)
    assert set(receiver.by_event()) == {"delivered", "clicked"}


async def test_never_receipted_number_gets_no_receipt(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    await post(http, sandbox, datasend(record(NEVER_RECEIPTED, "lost"),
                                       record(ALWAYS_DELIVERED, "seen"), dlrurl=receiver.url))
    async with asyncio.timeout(TIMEOUT_S):
        await sandbox.wait_receipts_posted()
    assert [data.meta for _, data in receiver.receipts] == ["seen"]


async def test_receipts_are_batched(
    http: aiohttp.ClientSession, start: Starter, receiver: Receiver
) -> None:
    sandbox = await start(receipt_batch_size=2, receipt_concurrency=1)
    await control(http, sandbox, receipts_paused=True)
    body = datasend(*[record(ALWAYS_DELIVERED, f"m{i}") for i in range(5)], dlrurl=receiver.url)
    await post(http, sandbox, body)
    assert (await stats(http, sandbox))["receipts_pending"] == 5
    await control(http, sandbox, receipts_paused=False)
    await receiver.wait_for(5)
    sizes = [sum(len(group["data"]) for group in posted) for _, posted in receiver.posts]
    assert sorted(sizes) == [1, 2, 2]


async def test_receipt_post_is_retried_after_a_503(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    receiver.answers.append(503)
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"), dlrurl=receiver.url))
    await receiver.wait_for(1)
    assert [status for status, _ in receiver.posts] == [503, 200]
    assert receiver.posts[0][1] == receiver.posts[1][1]
    counters = await stats(http, sandbox)
    assert (counters["receipts_retried"], counters["receipts_posted"]) == (1, 1)


async def test_receiver_killed_and_restarted_loses_nothing(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    receiver = Receiver()
    async with serving(receiver) as port:
        pass  # the receiver is gone; its URL now refuses connections
    body = datasend(*[record(ALWAYS_DELIVERED, f"m{i}") for i in range(20)], dlrurl=receiver.url)
    await post(http, sandbox, body)
    async with asyncio.timeout(TIMEOUT_S):
        await sandbox.wait_until(lambda s: s["receipts_retried"] >= 20)
    async with serving(receiver, port):
        await receiver.wait_for(20)
    assert sorted(data.meta for _, data in receiver.receipts) == sorted(f"m{i}" for i in range(20))
    assert sandbox.stats()["receipts_failed"] == 0


async def test_receipts_are_given_up_after_max_attempts(
    http: aiohttp.ClientSession, start: Starter, receiver: Receiver
) -> None:
    sandbox = await start(receipt_max_attempts=3)
    receiver.answers.extend([503, 502, 500])
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"), dlrurl=receiver.url))
    async with asyncio.timeout(TIMEOUT_S):
        await sandbox.wait_receipts_posted()
    counters = sandbox.stats()
    assert (counters["receipts_failed"], counters["receipts_posted"]) == (1, 0)
    assert len(receiver.posts) == 3


async def test_a_4xx_from_the_receiver_is_final(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    receiver.answers.append(400)
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"), dlrurl=receiver.url))
    async with asyncio.timeout(TIMEOUT_S):
        await sandbox.wait_receipts_posted()
    assert len(receiver.posts) == 1
    assert sandbox.stats()["receipts_rejected"] == 1


async def test_duplicate_receipts_when_asked(
    http: aiohttp.ClientSession, start: Starter, receiver: Receiver
) -> None:
    sandbox = await start(duplicate_receipt_ratio=1.0)
    await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "m1"), dlrurl=receiver.url))
    await receiver.wait_for(2)
    assert [data.meta for _, data in receiver.receipts] == ["m1", "m1"]


async def test_receipts_without_dlrurl_go_to_the_default_url_or_nowhere(
    http: aiohttp.ClientSession, start: Starter, receiver: Receiver
) -> None:
    nowhere = await start()
    await post(http, nowhere, datasend(record(ALWAYS_DELIVERED, "m1")))
    assert nowhere.stats()["receipts_unroutable"] == 1
    portal = await start(default_dlr_url=receiver.url)
    await post(http, portal, datasend(record(ALWAYS_DELIVERED, "m2")))
    assert [data.meta for _, data in await receiver.wait_for(1)] == ["m2"]


# -- pure parts ----------------------------------------------------------------------------


def test_random_outcomes_follow_the_seed_and_the_ratio() -> None:
    numbers = [f"9198{i:08d}" for i in range(200)]
    first = [decide(n, random.Random(3), 0.5) for n in numbers]
    assert first == [decide(n, random.Random(3), 0.5) for n in numbers]
    rng = random.Random(5)
    assert all(decide(n, rng, 1.0).delivered for n in numbers)
    failures = [decide(n, rng, 0.0) for n in numbers]
    assert all(f.code in FAILURE_CODES for f in failures)
    assert len({f.code for f in failures}) > 3


@pytest.mark.parametrize("code", sorted(FAILURE_CODES))
def test_every_failure_code_has_its_test_number(code: str) -> None:
    fate = decide(FAILING_PREFIX + code, random.Random(), 1.0)
    assert (fate.code, fate.description) == (code, FAILURE_CODES[code])


def test_token_bucket_admits_the_rate_and_tells_the_wait() -> None:
    bucket = ThrottleBucket(rate_per_s=10, now=0.0)
    assert bucket.take(10, now=0.0) == 0
    assert bucket.take(5, now=0.0) == pytest.approx(0.5)
    assert bucket.take(5, now=0.5) == 0
    assert bucket.take(1000, now=10.0) == 0  # a full bucket lets a big batch through
    assert bucket.take(1, now=10.0) > 90


# -- command line --------------------------------------------------------------------------


def test_accounts_come_from_options_and_the_senders_file() -> None:
    sender = Sender(name="otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                    username="acme", token_env="ACME_TOKEN")
    broken = Sender(name="promo", type=SenderType.PROMOTIONAL, sender_id="123456",
                    username="promo", token_env="UNSET_TOKEN")
    senders = Senders(default="otp", senders={"otp": sender, "promo": broken})
    accounts = collect_accounts(["other:tok2"], senders, environ={"ACME_TOKEN": "tok1"})
    assert {user: token.get_secret_value() for user, token in accounts.items()} == {
        "other": "tok2", "acme": "tok1"}
    with pytest.raises(CliError, match="USER:TOKEN"):
        collect_accounts(["no-colon"], None)
    with pytest.raises(CliError, match="different token"):
        collect_accounts(["acme:x"], senders, environ={"ACME_TOKEN": "tok1"})


def test_command_refuses_a_taken_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox_cmd, "configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("ICS_SMS_SENDERS_FILE", str(tmp_path / "senders.toml"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(sandbox_command, ["--port", str(port), "--account", "a:b"])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_command_refuses_bad_option_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sandbox_cmd, "configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("ICS_SMS_SENDERS_FILE", str(tmp_path / "senders.toml"))
    result = CliRunner().invoke(sandbox_command, ["--error-rate", "2"])
    assert result.exit_code == 1
    assert "--error-rate" in result.output


async def test_command_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "ICS_SMS_SENDERS_FILE": str(tmp_path / "senders.toml")}
    code = "from ics_sms.cli.sandbox_cmd import sandbox_command; sandbox_command()"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--port", "0", "--account", f"{USER}:{TOKEN}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        async with asyncio.timeout(20):
            assert process.stdout is not None
            line = (await process.stdout.readline()).decode()
            url = line.rsplit(" ", 1)[-1].strip()
            async with aiohttp.ClientSession() as session, session.get(f"{url}/_stats") as r:
                assert r.status == 200
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert TOKEN.encode() not in stderr
