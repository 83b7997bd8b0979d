"""The sandbox's ambiguous answers: it accepts a batch, then spoils the answer.

These are the faults after which a client cannot know what ICS accepted; the sandbox
counts every acceptance per smsgid, so a test can tell how many SMS were really sent.
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from ics_sms.sandbox import ALWAYS_DELIVERED, RunningSandbox
from ics_sms.schemas.ics import datasend_response
from tests.ics_sms.test_sandbox import (
    BEARER,
    Starter,
    control,
    datasend,
    post,
    record,
    start,
    stats,
)

__all__ = ["start"]  # the fixture, imported for the tests below

POISON = "1207161000000000666"


async def raw_post(sandbox: RunningSandbox, body: object, timeout_s: float = 5
                   ) -> tuple[int, str, bytes]:
    """(status, content type, body) on a session of its own."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
            http.post(sandbox.datasend_url, data=orjson.dumps(body), headers=BEARER) as answer:
        return answer.status, answer.content_type, await answer.read()


def two() -> dict[str, object]:
    return datasend(record(ALWAYS_DELIVERED, "Msg-1.AbC"), record(ALWAYS_DELIVERED, "Msg-2.dEf"))


async def test_every_acceptance_is_counted_per_smsgid(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await post(http, sandbox, two())
        await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "Msg-1.AbC")))
        await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "Msg-1.AbC")))
        counters = await stats(http, sandbox)
        async with http.get(f"{sandbox.url}/_stats?smsgids=1") as response:
            detailed = await response.json()
    assert "accepted_by_smsgid" not in counters
    assert counters["smsgids_accepted"] == 2
    assert counters["smsgids_accepted_more_than_once"] == 1
    assert counters["most_acceptances_of_one_smsgid"] == 3
    assert counters["duplicate_smsgids"] == 2
    assert detailed["accepted_by_smsgid"] == {"Msg-1.AbC": 3, "Msg-2.dEf": 1}


async def test_a_500_after_accepting_for_the_next_n_requests(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        status, knobs = await control(http, sandbox, answer_fault="500", answer_fault_requests=2)
        assert (status, knobs["answer_fault_requests_left"]) == (200, 2)
        statuses = [(await post(http, sandbox, two()))[0] for _ in range(3)]
        counters = await stats(http, sandbox)
        knobs = (await control(http, sandbox))[1]
    assert statuses == [500, 500, 200]
    assert counters["records_accepted"] == 6  # accepted every time, answered once
    assert counters["answer_faults"] == {"500": 2}
    assert knobs["answer_fault"] == "none"


async def test_a_late_answer_comes_after_the_client_gave_up(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, answer_fault="late", late_answer_ms=1000)
    with pytest.raises(TimeoutError):
        await raw_post(sandbox, two(), timeout_s=0.2)
    assert sandbox.stats()["requests_in_flight"] == 1  # still holding the answer
    assert sandbox.stats()["records_accepted"] == 2
    assert sandbox.stats()["answer_faults"] == {"late": 1}


async def test_a_reset_connection_after_accepting(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, answer_fault="reset", answer_fault_requests=1)
    with pytest.raises(aiohttp.ClientError):
        await raw_post(sandbox, two())
    assert (await raw_post(sandbox, two()))[0] == 200
    assert sandbox.stats()["records_accepted"] == 4


async def test_html_instead_of_the_answer(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, answer_fault="html")
    status, content_type, body = await raw_post(sandbox, two())
    assert (status, content_type) == (200, "text/html")
    assert body.startswith(b"<html>")
    assert sandbox.stats()["records_accepted"] == 2


async def test_answers_for_half_of_the_records(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, answer_fault="half")
    four = datasend(*[record(ALWAYS_DELIVERED, f"m{i}") for i in range(4)])
    status, _, body = await raw_post(sandbox, four)
    answers = datasend_response.validate_json(body)
    assert status == 200
    assert [a.smsgid for a in answers] == ["m0", "m1"]
    assert sandbox.stats()["records_accepted"] == 4


async def test_smsgids_echoed_lower_cased(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, lowercase_smsgids=True)
    _, _, body = await raw_post(sandbox, two())
    assert [a.smsgid for a in datasend_response.validate_json(body)] == ["msg-1.abc",
                                                                        "msg-2.def"]
    assert sandbox.stats(by_smsgid=True)["accepted_by_smsgid"] == {"Msg-1.AbC": 1,
                                                                   "Msg-2.dEf": 1}


async def test_a_poisoned_record_sinks_the_whole_request(start: Starter) -> None:
    sandbox = await start()
    async with aiohttp.ClientSession() as http:
        await control(http, sandbox, poison_templateid=POISON)
        poisoned = datasend(record(ALWAYS_DELIVERED, "a"),
                            record(ALWAYS_DELIVERED, "b", templateid=POISON))
        status, answer, _ = await post(http, sandbox, poisoned)
        assert (status, answer["error"]) == (400, "malformed request")
        assert (await post(http, sandbox, datasend(record(ALWAYS_DELIVERED, "a"))))[0] == 200
        await control(http, sandbox, poison_templateid="")
        assert (await post(http, sandbox, poisoned))[0] == 200
        counters = await stats(http, sandbox)
    assert counters["requests_poisoned"] == 1
    assert counters["records_accepted"] == 3
