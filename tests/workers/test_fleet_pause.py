"""A 429 or refused credentials seen by one worker pause the sender in every worker.

Two :class:`Worker` objects in this process share the RabbitMQ namespace and Redis, as two
worker processes would; each talks to an ICS of its own, so the test knows which worker
sent what. Worker A meets the refusal; worker B never does, and still waits for the end
of the pause before its first request: it read the pause in the rate store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from ics_sms.schemas.messages import Status
from ics_sms.schemas.settings import Settings
from tests.workers.conftest import (
    FakeIcs,
    Pipeline,
    accept_all,
    open_pipeline,
    request,
    running_worker,
    serving,
    status,
)

PAUSE_S = 3.0


def timed(times: list[float], responder: Callable[[dict[str, Any]], web.Response],
          seen: asyncio.Event | None = None) -> Callable[..., web.Response]:
    """``responder``, noting when each request reached this ICS (monotonic clock)."""
    def answer(body: dict[str, Any]) -> web.Response:
        times.append(time.monotonic())
        if seen is not None:
            seen.set()
        return responder(body)
    return answer


@pytest.fixture
async def pipeline(amqp_settings: Settings) -> AsyncIterator[Pipeline]:
    async with open_pipeline(amqp_settings) as pipe:
        yield pipe


@pytest.mark.parametrize("refusal", ["429", "401"])
async def test_a_refusal_met_by_one_worker_pauses_the_sender_in_the_other(
        refusal: str, amqp_settings: Settings, pipeline: Pipeline) -> None:
    settings = amqp_settings.model_copy(update={
        "linger_ms": 5.0, "backoff_base_s": 0.01, "backoff_cap_s": 0.02,
        "sender_pause_s": PAUSE_S})
    refused = (status(429, {"Retry-After": str(int(PAUSE_S))}) if refusal == "429"
               else status(401))
    times_a: list[float] = []
    times_b: list[float] = []
    met = asyncio.Event()
    ics_a = FakeIcs(responders=[timed(times_a, refused, met), timed(times_a, accept_all)])
    ics_b = FakeIcs(responders=[timed(times_b, accept_all)])
    async with serving(ics_a), serving(ics_b), \
            running_worker(settings.model_copy(update={"ics_url": ics_a.url})):
        await pipeline.publish(request(0))
        async with asyncio.timeout(20):
            await met.wait()  # A met the refusal
        refused_at = times_a[0]
        async with running_worker(settings.model_copy(update={"ics_url": ics_b.url})):
            await pipeline.publish(*(request(i) for i in range(1, 21)))
            published_at = time.monotonic()
            events = await pipeline.next_events(21, timeout_s=60)
    assert published_at < refused_at + PAUSE_S, "B was ready only after the pause: no test"
    assert {(e.status, e.attempt) for e in events} == {(Status.SUBMITTED, 1)}
    assert len({e.message_id for e in events}) == 21
    assert times_b, "worker B sent nothing: it was not put to the test"
    # B never met the refusal, and sent nothing before the pause A recorded had ended
    assert min(times_b) >= refused_at + PAUSE_S
    assert all(t >= refused_at + PAUSE_S for t in times_a[1:])
