"""``ics-sms dead-letters``: list, show, replay and purge on real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from pydantic import SecretStr

from ics_sms.broker.base import Broker, Delivery, Outgoing
from ics_sms.broker.codec import send_message
from ics_sms.cli.dead_letters_cmd import REPLAY_KEY
from ics_sms.cli.main import cli
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.senders import Lane, Senders, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.live import LiveSenders
from ics_sms.stores.senders import open_sender_source
from tests.workers.conftest import SERVICE, FakeIcs, accept_all, request, running_worker, serving
from tests.workers.dead_letters_helpers import dead_letter, declared_broker

pytestmark = pytest.mark.usefixtures("isolated_logging")

NEW_TOKEN = "tok-renewed-987654321"


def invoke(settings: Settings, *args: str, input: str | None = None) -> Result:
    env = {"ICS_SMS_BROKER_URL": settings.broker_url.get_secret_value(),
           "ICS_SMS_NAMESPACE": settings.namespace, "ICS_SMS_REDIS_URL": settings.redis_url,
           "ICS_SMS_SENDERS_FILE": str(settings.senders_file),
           "ICS_SMS_CALLBACK_SECRET": "test-callback-secret-of-32-bytes-or-more",
           "ICS_SMS_LOG_FORMAT": "json"}
    return CliRunner().invoke(cli, list(args), input=input, env=env)


async def ok(settings: Settings, *args: str, input: str | None = None) -> str:
    """Run the command (in a thread: it runs its own event loop) and return its stdout."""
    result = await asyncio.to_thread(invoke, settings, *args, input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


async def fails(settings: Settings, *args: str, input: str | None = None) -> str:
    result = await asyncio.to_thread(invoke, settings, *args, input=input)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


async def listed(settings: Settings, *filters: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(await ok(settings, "dead-letters", "list",
                                                  "--json", *filters))
    return value


@pytest.fixture
async def broker(amqp_settings: Settings) -> AsyncIterator[Broker]:
    async with declared_broker(amqp_settings) as opened:
        yield opened


async def test_a_bad_age_names_its_option(amqp_settings: Settings) -> None:
    assert await fails(amqp_settings, "dead-letters", "list", "--older-than", "2x") == (
        "--older-than: '2x' is not an age (e.g. 90s, 30m, 2h, 7d)")


async def test_list_and_show_leave_every_dead_letter_in_place(
        amqp_settings: Settings, broker: Broker) -> None:
    settings = amqp_settings
    await dead_letter(settings, broker, request(1, sender="otp"), "sender_unauthorized")
    await dead_letter(settings, broker, request(2, campaign_id="c2"), "dlt")
    await dead_letter(settings, broker, request(3, sender="otp"), "sender_unauthorized")
    for _ in range(3):  # reading often never pushes one towards a delivery limit
        everything = await listed(settings)
    assert everything["count"] == 3
    assert everything["by_reason"] == {"sender_unauthorized": 2, "dlt": 1}
    assert [d["message_id"] for d in everything["dead_letters"]] == ["m1", "m2", "m3"]
    assert everything["dead_letters"][0]["to"] == "+4477*****123"  # masked in lists
    assert (await listed(settings, "--reason", "dlt"))["count"] == 1
    assert (await listed(settings, "--sender", "otp", "--campaign", "c1"))["count"] == 2
    assert (await listed(settings, "--sender", "(default)"))["count"] == 1
    assert (await listed(settings, "--older-than", "1h"))["count"] == 0
    assert (await listed(settings, "--newer-than", "1h"))["count"] == 3
    [shown] = orjson.loads(await ok(settings, "dead-letters", "show", "m2", "--json"))
    assert (shown["to"], shown["body"]["text"], shown["reason"]) == (
        "+447700900123", "hello 2", "dlt")
    assert shown["headers"].get("x-delivery-count", 0) <= 1  # never adds up
    table = await ok(settings, "dead-letters", "list")
    assert "3 dead letter(s): sender_unauthorized=2, dlt=1" in table
    assert "no dead letter with message_id 'm9'" in await fails(
        settings, "dead-letters", "show", "m9")
    assert await broker.queue_depth(settings.topology.dead_queue) == 3


async def test_purge_asks_and_removes_only_what_is_selected(
        amqp_settings: Settings, broker: Broker) -> None:
    settings = amqp_settings
    await dead_letter(settings, broker, request(1), "dlt")
    await dead_letter(settings, broker, request(2), "unknown_sender")
    assert "--all" in await fails(settings, "dead-letters", "purge", "--yes")
    refused = await asyncio.to_thread(invoke, settings, "dead-letters", "purge",
                                      "--reason", "dlt", input="n\n")
    assert refused.exit_code != 0 and "Purge 1 dead letter(s) (dlt=1)?" in refused.output
    assert (await listed(settings))["count"] == 2
    out = await ok(settings, "dead-letters", "purge", "--reason", "dlt", "--yes")
    assert out.strip() == "purged 1 dead letter(s): dlt=1"
    assert [d["message_id"] for d in (await listed(settings))["dead_letters"]] == ["m2"]


async def test_replay_needs_a_selection_and_never_replays_a_duplicate(
        amqp_settings: Settings, broker: Broker) -> None:
    settings = amqp_settings
    await dead_letter(settings, broker, request(1), "duplicate")
    assert "--all" in await fails(settings, "dead-letters", "replay")
    result = orjson.loads(await ok(settings, "dead-letters", "replay", "m1", "--json"))
    assert result["replayed"] == []
    assert "another message" in result["skipped"][0]["why"]
    assert (await listed(settings))["count"] == 1


# -- done when: refused sender, new token, replay, delivered once ---------------------------------


@pytest.fixture
async def refusing_ics() -> AsyncIterator[FakeIcs]:
    """ICS refusing every token but the renewed one."""
    fake = FakeIcs()

    def answer(body: dict[str, Any]) -> web.Response:
        if fake.auth[-1] == f"Bearer {NEW_TOKEN}":
            return accept_all(body)
        return web.json_response({"error": "invalid credentials"}, status=401)

    fake.responders.append(answer)
    async with serving(fake):
        yield fake


async def test_dead_letters_of_a_refused_sender_are_replayed_once_after_a_new_token(
        amqp_settings: Settings, broker: Broker, refusing_ics: FakeIcs, redis_url: str,
        tmp_path: Path) -> None:
    settings = amqp_settings.model_copy(update={
        "ics_url": refusing_ics.url, "redis_url": redis_url, "linger_ms": 5.0,
        "sender_pause_s": 0.2, "sender_unauthorized_after_s": 1.0, "senders_reload_s": 0.2,
        "senders_file": tmp_path / "senders.toml"})
    save_senders(settings.senders_file, Senders(default="otp", senders={"otp": SERVICE}))
    events: asyncio.Queue[ReceiptEvent] = asyncio.Queue()

    def on_event(delivery: Delivery) -> None:
        events.put_nowait(ReceiptEvent.model_validate_json(delivery.body))
        broker.ack(delivery)

    async def next_events(count: int) -> list[ReceiptEvent]:
        async with asyncio.timeout(30):
            return [await events.get() for _ in range(count)]

    await broker.consume(settings.topology.events_queue, 100, on_event)
    live = LiveSenders.open(open_sender_source(settings), settings)
    async with running_worker(settings, live):
        await broker.publish([send_message(settings.topology, request(i), Lane.SERVICE)
                              for i in (1, 2)])
        failed = await next_events(2)
        assert {(e.status, e.error_code) for e in failed} == {
            (Status.FAILED, "sender_unauthorized")}
        assert (await listed(settings, "--reason", "sender_unauthorized"))["count"] == 2

        [original] = orjson.loads(await ok(settings, "dead-letters", "show", "m1", "--json"))
        await ok(settings, "senders", "set", "otp", "--token-stdin", input=f"{NEW_TOKEN}\n")
        await live.reload()  # what the worker does every senders_reload_s
        assert live.current.named("otp").token == SecretStr(NEW_TOKEN)
        out = await ok(settings, "dead-letters", "replay", "--reason", "sender_unauthorized")
        assert "2 replayed, 0 kept" in out
        again = await ok(settings, "dead-letters", "replay", "--reason", "sender_unauthorized")
        assert "0 replayed, 0 kept" in again  # the dead letters are gone: nothing twice

        submitted = await next_events(2)
        assert {(e.message_id, e.status) for e in submitted} == {
            ("m1", Status.SUBMITTED), ("m2", Status.SUBMITTED)}
        assert all(e.metadata[REPLAY_KEY] == 1 and e.attempt == 1 for e in submitted)
        # what the operator sees: the campaign counts the replayed messages as submitted,
        # no longer failed, and the timeline tells the whole story
        campaign = orjson.loads(await ok(settings, "campaigns", "show", "c1", "--json"))
        assert {s: n for s, n in campaign["states"].items() if n} == {"submitted": 2}
        assert campaign["failure_codes"] == [] and campaign["reached"] == 2
        timeline = orjson.loads(await ok(settings, "messages", "show", "m1", "--json"))
        changes = [(e["state"], e["note"]) for e in timeline["timeline"]]
        replayed_at = changes.index(("pending", "replay"))
        assert changes[replayed_at - 1] == ("failed", "sender_unauthorized")
        assert changes[-1] == ("submitted", timeline["provider_message_id"])
        assert ("submitted", timeline["provider_message_id"]) not in changes[:replayed_at]
        # a replay that stopped before removing its dead letter leaves it in the queue:
        # replaying it again sends nothing (the message store knows ICS has it)
        await broker.publish([Outgoing(settings.topology.dead_exchange, "service",
                                       orjson.dumps(original["body"]), original["headers"],
                                       "m1")])
        third = orjson.loads(await ok(settings, "dead-letters", "replay", "m1", "--json"))
        assert third["replayed"] == [] and "on its way" in third["skipped"][0]["why"]
    accepted = [r["smsgid"] for req, auth in zip(refusing_ics.requests, refusing_ics.auth,
                                                 strict=True)
                if auth == f"Bearer {NEW_TOKEN}" for r in req["smstosend"]]
    assert len(accepted) == 2 and len(set(accepted)) == 2  # each message once
    assert (await listed(settings))["count"] == 1
