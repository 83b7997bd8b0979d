"""Receipt ingest load test: many concurrent POSTs of receipt batches to a real receiver.

``python -m ics_sms.callbacks.bench`` starts a receiver in a child process (as ``ics-sms
receiver`` would run) on a throwaway namespace of the broker in ``ICS_SMS_BROKER_URL``,
fills the context store (``ICS_SMS_REDIS_URL``) for every message, posts the receipts and
reports receipts/s accepted *and confirmed* (every 200 means the events are in the
broker). It then checks that the events queue holds exactly one event per receipt and
deletes the namespace. :func:`post_batches` is the load generator alone.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import click
import orjson
import pika

from ics_sms.broker.admin import delete_topology
from ics_sms.schemas.messages import Encoding
from ics_sms.schemas.senders import Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.smsgid import SmsgidSigner
from ics_sms.stores.context import MessageContext, open_context_store
from ics_sms.stores.links import RedisLinkStore, ShortLink

__all__ = ["BenchResult", "follow_links", "make_bodies", "post_batches"]

_KINDS = ("delivered",) * 7 + ("failed",) * 2 + ("clicked",)
_CONTEXT_TTL_S = 600
"""The bench's contexts vanish on their own soon after the run."""


@dataclass(slots=True)
class BenchResult:
    """What a load run achieved."""

    receipts: int = 0
    elapsed_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.receipts / self.elapsed_s if self.elapsed_s else 0.0


def _record(kind: str, smsgid: str, ts: int) -> dict[str, object]:
    record: dict[str, object] = {"ts": ts, "meta": smsgid}
    if kind == "failed":
        record.update(code="914", description="undelivered")
    elif kind == "clicked":
        record.update(url="https://shop.example/sale", shortUrl="https://ics.link/Ab3")
    return record


def make_bodies(signer: SmsgidSigner, message_ids: Sequence[str], batch: int) -> list[bytes]:
    """JSON receipt bodies of ``batch`` records each, grouped by event like ICS does."""
    ts = int(time.time())
    bodies = []
    for start in range(0, len(message_ids), batch):
        groups: dict[str, list[dict[str, object]]] = {}
        for offset, message_id in enumerate(message_ids[start:start + batch]):
            kind = _KINDS[(start + offset) % len(_KINDS)]
            groups.setdefault(kind, []).append(_record(kind, signer.sign(message_id), ts))
        bodies.append(orjson.dumps([{"event": k, "data": v} for k, v in groups.items()]))
    return bodies


async def post_batches(url: str, bodies: Sequence[bytes], concurrency: int) -> BenchResult:
    """POST every body with ``concurrency`` requests in flight; count processed receipts."""
    result = BenchResult()
    queue = iter(bodies)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                result.statuses[response.status] += 1
                if response.status == 200:
                    result.receipts += orjson.loads(answer)["processed"]

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
    return result


async def follow_links(base_url: str, codes: Sequence[str], concurrency: int) -> BenchResult:
    """GET ``/l/{code}`` for every code with ``concurrency`` requests in flight."""
    result = BenchResult()
    queue = iter(codes)

    async def client(session: aiohttp.ClientSession) -> None:
        for code in queue:
            async with session.get(f"{base_url}/l/{code}", allow_redirects=False) as response:
                result.statuses[response.status] += 1
                result.receipts += response.status == 302

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
    return result


async def _fill_links(settings: Settings, count: int) -> list[str]:
    links = [ShortLink(code=f"b{i:09d}", url=f"https://shop.example.in/p/{i}",
                       message_id=f"bench-{i}", campaign_id="bench", sender="bench")
             for i in range(count)]
    async with RedisLinkStore(settings.redis_url, prefix=f"ics-sms:{settings.namespace}",
                              ttl_s=_CONTEXT_TTL_S) as store:
        for start in range(0, count, 1000):
            await store.put_many(links[start:start + 1000])
    return [link.code for link in links]


async def _fill_contexts(settings: Settings, message_ids: Sequence[str]) -> None:
    store = open_context_store(settings, ttl_s=_CONTEXT_TTL_S)
    try:
        for start in range(0, len(message_ids), 1000):
            await store.put_many([
                MessageContext(message_id=m, campaign_id="bench", sender="bench",
                               metadata={"list": "bench"}, segments=1, encoding=Encoding.GSM7)
                for m in message_ids[start:start + 1000]
            ])
    finally:
        await store.close()


async def _wait_ready(base_url: str, child: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise click.ClickException("the receiver exited during start-up")
            try:
                async with session.get(base_url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    raise click.ClickException(f"the receiver was not ready within {timeout_s:g}s")


def _events_and_cleanup(settings: Settings) -> int:
    """Events in the namespace's events queue; then delete the namespace."""
    topology = settings.topology
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url.get_secret_value()))
    try:
        channel = connection.channel()
        depth: int = channel.queue_declare(topology.events_queue, passive=True).method.message_count
    finally:
        connection.close()
    delete_topology(settings.broker_url.get_secret_value(), topology)
    return depth


def _spawn_receiver(settings: Settings, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ICS_SMS_NAMESPACE": settings.namespace,
           "ICS_SMS_SENDERS_FILE": str(settings.senders_file),
           "ICS_SMS_CALLBACK_SECRET": settings.callback_secret.get_secret_value(),
           "ICS_SMS_LOG_LEVEL": "warning", "ICS_SMS_LOG_FORMAT": "json"}
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ics_sms.cli.receiver_cmd", "--port", str(port)],
            env=env, stderr=log, stdout=subprocess.DEVNULL)


@click.command("bench")
@click.option("--receipts", default=200_000, show_default=True, help="Receipts to post.")
@click.option("--batch", default=100, show_default=True, help="Receipts per POST.")
@click.option("--concurrency", default=64, show_default=True, help="POSTs in flight.")
@click.option("--port", default=18089, show_default=True, help="Port of the receiver.")
@click.option("--context/--no-context", default=True, show_default=True,
              help="Fill the context store first, so every event gets enriched.")
@click.option("--redirects", is_flag=True,
              help="Measure GET /l/{code} redirects (clicks) instead of receipt ingest.")
def main(receipts: int, batch: int, concurrency: int, port: int, context: bool,
         redirects: bool) -> None:
    """Measure receipt ingest (receipts/s accepted and confirmed) on a fresh receiver."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(namespace=f"bench{secrets.token_hex(3)}.",
                            senders_file=Path(tmp, "senders.toml"),
                            callback_secret=secrets.token_urlsafe(32))
        sender = Sender(name="bench", type=SenderType.SERVICE_IMPLICIT, sender_id="BENCHX",
                        username="bench", token="bench-token-not-real")
        save_senders(settings.senders_file, Senders().add(sender))
        signer = SmsgidSigner(settings.callback_secret.get_secret_value())
        ids = [f"bench-{i}" for i in range(receipts)]
        bodies = [] if redirects else make_bodies(signer, ids, batch)
        codes = asyncio.run(_fill_links(settings, receipts)) if redirects else []
        if context and not redirects:
            asyncio.run(_fill_contexts(settings, ids))
        base_url = f"http://127.0.0.1:{port}"
        child = _spawn_receiver(settings, port, Path(tmp, "receiver.log"))
        try:
            asyncio.run(_wait_ready(base_url, child, settings.connect_retry_s + 30))
            result = asyncio.run(
                follow_links(base_url, codes, concurrency) if redirects
                else post_batches(base_url + sender.tracking_path(), bodies, concurrency))
        finally:
            child.terminate()
            child.wait(30)
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            stored = _events_and_cleanup(settings)
            problems = Path(tmp, "receiver.log").read_text().strip()
    what = "redirects (302 + clicked event)" if redirects else "receipts"
    click.echo(f"{result.receipts} {what} in {result.elapsed_s:.2f}s: "
               f"{result.per_s:,.0f}/s accepted and confirmed "
               f"(batch {batch}, concurrency {concurrency}, context {'on' if context else 'off'})")
    cpu_us = (usage.ru_utime + usage.ru_stime) / max(result.receipts, 1) * 1e6
    click.echo(f"HTTP statuses: {dict(result.statuses)}; events in queue: {stored}; "
               f"receiver CPU {cpu_us:.0f} us/receipt (start-up included)")
    if problems:
        click.echo("receiver warnings:\n" + problems[-2000:], err=True)
    if stored != result.receipts:
        raise click.ClickException(f"{result.receipts} receipts accepted but {stored} events")


if __name__ == "__main__":
    main()
