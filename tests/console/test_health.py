"""The health page's facts: queue depths from RabbitMQ (passive declares, or the
management API), the promotional window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ics_sms.broker.admin import declare_topology
from ics_sms.console.health import queue_states, window_state
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings


async def test_passive_declares_give_ready_and_consumers_not_unacked(
        amqp_settings: Settings) -> None:
    declare_topology(amqp_settings.broker_urls[0], amqp_settings.topology)
    states, source = await queue_states(amqp_settings)
    assert "passive declares" in source
    names = [s.name for s in states]
    assert names[:2] == [amqp_settings.topology.send_queue(lane) for lane in Lane]
    assert all((s.ready, s.unacked, s.consumers) == (0, None, 0) for s in states)


async def test_a_missing_queue_is_named_not_fatal(amqp_settings: Settings) -> None:
    states, _ = await queue_states(amqp_settings)  # nothing declared in this namespace
    assert all(s.ready is None and "NOT_FOUND" in s.problem for s in states)


@pytest.fixture
async def management() -> AsyncIterator[tuple[TestServer, list[str]]]:
    asked: list[str] = []

    async def queue(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.headers.get("Authorization") != "Basic b3BzOnNlY3JldA==":  # ops:secret
            return web.json_response({}, status=401)
        return web.json_response({"messages_ready": 7, "messages_unacknowledged": 3,
                                  "consumers": 2})

    app = web.Application()
    app.router.add_get("/api/queues/{vhost}/{name}", queue)
    async with TestServer(app) as server:
        yield server, asked


async def test_the_management_api_gives_unacked_too(
        management: tuple[TestServer, list[str]]) -> None:
    server, asked = management
    settings = Settings(broker_url="amqp://u:p@rabbit:5672/prod",
                        rabbitmq_management_url=f"http://ops:secret@{server.host}:{server.port}")
    states, source = await queue_states(settings)
    assert source == "RabbitMQ management API"
    assert {(s.ready, s.unacked, s.consumers) for s in states} == {(7, 3, 2)}
    assert asked[0] == "/api/queues/prod/sms.send.service"


def test_the_promotional_window_says_when_it_opens() -> None:
    settings = Settings(promo_window_start=time(9), promo_window_end=time(21),
                        promo_timezone="Asia/Kolkata")
    night = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # 22:30 in Kolkata
    closed = window_state(settings, night)
    assert not closed.open
    assert closed.changes_at == datetime(2026, 12, 2, 3, 30, tzinfo=UTC)  # 09:00 IST
    assert window_state(settings, datetime(2026, 12, 1, 6, 0, tzinfo=UTC)).open
