"""Run the whole pipeline: sandbox, receiver, workers, events consumer, a campaign.

On the embedded broker (``memory://``, the default) everything shares this process and
its event loop. With ``--broker amqp://...`` the workers are separate ``ics-sms worker``
processes and the topology lives in a namespace of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr
from redis.exceptions import RedisError

from ics_sms.broker.admin import delete_topology
from ics_sms.broker.base import Broker, Delivery
from ics_sms.broker.connect import open_broker
from ics_sms.callbacks.app import create_app
from ics_sms.callbacks.serve import bind_socket
from ics_sms.console.demo import demo_console, until_interrupted
from ics_sms.demo.campaign import sample_campaign
from ics_sms.demo.display import Display
from ics_sms.demo.tracker import DemoTracker
from ics_sms.producers.memory import MemoryProducer
from ics_sms.producers.publisher import Producer
from ics_sms.sandbox import SandboxConfig, start_sandbox
from ics_sms.schemas.messages import ReceiptEvent, SendRequest
from ics_sms.schemas.senders import ClickTracking, Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.context import open_context_store
from ics_sms.stores.links import open_link_store
from ics_sms.stores.messages import open_message_store
from ics_sms.stores.redis import delete_prefix
from ics_sms.workers.service import Worker

__all__ = ["DemoOptions", "run_demo"]

_CHUNK = 1000
_ENTITY = "1201159100000000000"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    messages: int = 10_000
    broker_url: str | None = None
    workers: int = 1
    timeout_s: float = 120.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    console_port: int | None = None
    """Serve the operator console on this port too, until Ctrl-C (``demo --console``)."""

    @property
    def embedded(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith("memory:")


def _senders() -> Senders:
    otp = Sender(name="demo-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                 username="acme-otp", token=SecretStr(secrets.token_urlsafe(16)),
                 dlt_entity_id=_ENTITY, rate_per_s=50_000)
    offers = Sender(name="demo-offers", type=SenderType.PROMOTIONAL, sender_id="512345",
                    username="acme-offers", token=SecretStr(secrets.token_urlsafe(16)),
                    dlt_entity_id=_ENTITY, rate_per_s=50_000, click_tracking=ClickTracking.ICS)
    return Senders().add(otp).add(offers)


def _settings(options: DemoOptions, folder: Path, sandbox_url: str, public_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    embedded = options.embedded
    return Settings(
        broker_url=SecretStr(f"memory://demo-{tag}" if embedded else str(options.broker_url)),
        namespace="" if embedded else f"demo-{tag}.",
        senders_file=folder / "senders.toml",
        public_url=public_url, ics_url=sandbox_url,
        callback_secret=SecretStr(secrets.token_urlsafe(24)),
        redis_url="memory://" if embedded else options.redis_url,
        promo_window_start=clock_time(0), promo_window_end=clock_time(0),
        log_level="warning", connect_retry_s=10, linger_ms=10, metrics_port=0,
    )


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a service process started by the demo or the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS_SMS_")}
    env.update(settings.to_environment())
    return env


class _Pipeline:
    """The running services of one demo, and how to stop them."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.processes: list[asyncio.subprocess.Process] = []

    async def start_workers(self, settings: Settings, senders: Senders, options: DemoOptions,
                            store: Any, links: Any, messages: Any) -> None:
        if options.embedded:
            for _ in range(options.workers):
                worker = Worker(settings, senders, link_store=links, message_store=messages)
                self.tasks.append(asyncio.create_task(worker.run(self.stop)))
            return
        for _ in range(options.workers):
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ics_sms", "worker", env=child_environment(settings),
                stdin=asyncio.subprocess.DEVNULL))

    async def close(self) -> None:
        self.stop.set()
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await process.wait()
            if process.returncode is None:
                process.kill()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def crashed(self) -> str | None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"a worker stopped: {task.exception()!r}"
        for process in self.processes:
            if process.returncode is not None:
                return f"a worker process exited with status {process.returncode}"
        return None


@contextlib.asynccontextmanager
async def _receiver(settings: Settings, senders: Senders, store: Any, links: Any,
                    messages: Any, sock: Any) -> AsyncIterator[None]:
    app = create_app(settings, senders, context_store=store, link_store=links,
                     message_store=messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _maybe_console(settings: Settings, messages: Any,
                         options: DemoOptions) -> AsyncIterator[None]:
    if options.console_port is None:
        yield
        return
    async with demo_console(settings, messages, options.console_port):
        yield


async def _consume_events(settings: Settings, tracker: DemoTracker) -> Broker:
    broker = await open_broker(settings, name="ics-sms demo events")
    await broker.declare(settings.topology)

    def on_event(delivery: Delivery) -> None:
        tracker.record(ReceiptEvent.model_validate_json(delivery.body))
        broker.ack(delivery)

    await broker.consume(settings.topology.events_queue, 2000, on_event)
    return broker


def _chunks(requests: Iterator[SendRequest]) -> Iterator[list[SendRequest]]:
    chunk: list[SendRequest] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _publish(settings: Settings, senders: Senders, options: DemoOptions,
                   tracker: DemoTracker) -> None:
    campaign = sample_campaign(options.messages, f"demo-{uuid.uuid4().hex[:6]}",
                               service="demo-otp", promotional="demo-offers")
    url = settings.broker_url.get_secret_value()
    if options.embedded:
        producer = MemoryProducer(url, settings.topology, senders)
        with producer:
            for chunk in _chunks(campaign):
                tracker.published([r.message_id for r in chunk])
                producer.publish_many(chunk)
                await asyncio.sleep(0)  # let the in-process workers run meanwhile
        return
    with Producer(url, settings.topology, senders) as amqp_producer:
        for chunk in _chunks(campaign):
            tracker.published([r.message_id for r in chunk])
            await asyncio.to_thread(amqp_producer.publish_many, chunk)


async def run_demo(options: DemoOptions, display: Display) -> dict[str, Any]:
    """Run a campaign through everything; the summary says what happened to each message."""
    senders = _senders()
    accounts = {s.username: s.resolve_token() for s in senders}
    tracker = DemoTracker(expected=options.messages)
    sandbox_config = SandboxConfig(accounts=accounts, seed=7, receipt_delay_ms=200,
                                   click_delay_ms=300, click_ratio=0.2)
    with tempfile.TemporaryDirectory(prefix="ics-sms-demo-") as folder:
        sock = bind_socket("127.0.0.1", 0)
        public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with await start_sandbox(sandbox_config) as sandbox:
            settings = _settings(options, Path(folder), sandbox.url, public_url)
            save_senders(settings.senders_file, senders)
            store = open_context_store(settings)
            links = open_link_store(settings)
            messages = open_message_store(settings)
            pipeline = _Pipeline()
            events: Broker | None = None
            try:
                async with _receiver(settings, senders, store, links, messages, sock), \
                        _maybe_console(settings, messages, options):
                    events = await _consume_events(settings, tracker)
                    await pipeline.start_workers(settings, senders, options, store, links,
                                                 messages)
                    display.start(options.messages)
                    tracker.started = time.monotonic()
                    try:
                        await _publish(settings, senders, options, tracker)
                        await _wait(tracker, sandbox, pipeline, display, options.timeout_s)
                    finally:
                        tracker.finished = time.monotonic()
                        display.update(tracker)
                        display.stop()
                    if options.console_port is not None:
                        await until_interrupted()
                    await pipeline.close()
            finally:
                await pipeline.close()
                if events is not None:
                    await events.close()
                if not options.embedded:
                    await asyncio.to_thread(delete_topology,
                                            settings.broker_url.get_secret_value(),
                                            settings.topology)
                    with contextlib.suppress(RedisError, OSError):  # they expire anyway
                        await delete_prefix(settings.redis_url,
                                            f"ics-sms:{settings.namespace}")
            summary = tracker.summary()
            summary["duplicate_submissions"] = sandbox.stats().get("duplicate_smsgids", 0)
            summary["broker"] = "embedded (memory://)" if options.embedded else \
                settings.broker_url_redacted
            summary["workers"] = options.workers
            return summary


async def _wait(tracker: DemoTracker, sandbox: Any, pipeline: _Pipeline, display: Display,
                timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        display.update(tracker)
        problem = pipeline.crashed()
        if problem is not None:
            display.note(problem)
            return
        if tracker.complete and sandbox.stats().get("receipts_pending", 1) == 0:
            return
        await asyncio.sleep(0.1)
    display.note(f"gave up waiting after {timeout_s:g}s")
