"""What the message store keeps per message, measured: ``python -m ics_sms.bench.retention``.

Runs N messages through the real Redis store the way the pipeline does (claim, the
``uncertain`` mark before the ICS request, ``submitted`` with ICS's id, a delivery receipt,
a click for a share of them), each to its own phone number, then reports Redis memory per
message two ways: the growth of ``used_memory`` (everything: records, timelines, the
phone index, the deadline set, campaign counters) and ``MEMORY USAGE`` of a sample of
keys; and the time Redis spent in the store's scripts per message (``INFO commandstats``,
``evalsha``). Everything it wrote is deleted at the end. It needs a Redis of its own or a quiet
one: other clients' writes during the run count in the first figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid

import orjson
from redis.asyncio import Redis

from ics_sms.schemas.messages import Encoding
from ics_sms.stores.context import MessageContext
from ics_sms.stores.messages import Claim, RedisMessageStore, State, Transition

__all__ = ["measure"]

_BATCH = 500


def _claims(start: int, count: int, campaign: str) -> list[Claim]:
    claims = []
    for i in range(start, start + count):
        message_id = f"{campaign}-{i:08d}"
        context = MessageContext.model_construct(
            message_id=message_id, campaign_id=campaign, sender="acme-offers",
            metadata={"customer_id": f"c{i:09d}", "segment": "diwali"}, segments=1,
            encoding=Encoding.GSM7, urls=("https://shop.example.in/sale",))
        claims.append(Claim(message_id, uuid.uuid4().hex[:24], 1, context,
                            smsgid=f"{message_id}.{uuid.uuid4().hex[:16]}",
                            to=f"+9198{i:08d}"))
    return claims


async def measure(url: str, messages: int, click_share: float = 0.2) -> dict[str, float]:
    prefix = f"ics-sms:bench-retention-{uuid.uuid4().hex[:6]}.msg:"
    store = RedisMessageStore(url, prefix=prefix)
    client = Redis.from_url(url)
    rng = random.Random(7)
    try:
        before = int((await client.info("memory"))["used_memory"])
        scripts_before = await _script_usec(client)
        started = time.perf_counter()
        for start in range(0, messages, _BATCH):
            claims = _claims(start, min(_BATCH, messages - start), "bench-retention")
            ids = [c.message_id for c in claims]
            await store.claim(claims, token="t")
            await store.apply([Transition(m, State.UNCERTAIN, token="t") for m in ids])
            await store.apply([Transition(m, State.SUBMITTED, provider_message_id=f"ics{m[-8:]}")
                               for m in ids])
            await store.apply([Transition(m, State.DELIVERED, event_id=f"e-{m}", sent=True)
                               for m in ids])
            clicks = [(m, "https://shop.example.in/sale", f"k-{m}") for m in ids
                      if rng.random() < click_share]
            await store.clicked(clicks)
        elapsed = time.perf_counter() - started
        after = int((await client.info("memory"))["used_memory"])
        script_us = (await _script_usec(client) - scripts_before) / messages
        sample = [f"{prefix}bench-retention-{i:08d}" for i in
                  rng.sample(range(messages), min(200, messages))]
        record_bytes = [await client.memory_usage(k) or 0 for k in sample]
        phone_bytes = sum([await client.memory_usage(k) or 0 async for k in
                           client.scan_iter(match=prefix + "~to:*", count=1000)])
        deadlines = await client.memory_usage(prefix + "~deadlines") or 0
        per_message = (after - before) / messages
        return {
            "messages": messages,
            "used_memory_growth_bytes_per_message": round(per_message, 1),
            "used_memory_per_million_mib": round(per_message * 1e6 / 2**20, 1),
            "record_key_bytes_mean": round(sum(record_bytes) / len(record_bytes), 1),
            "phone_index_bytes_per_message": round(phone_bytes / messages, 1),
            "deadline_set_bytes_per_message": round(deadlines / messages, 1),
            "redis_script_us_per_message": round(script_us, 1),
            "seconds": round(elapsed, 2),
            "messages_per_s_through_four_transitions": round(messages / elapsed),
        }
    finally:
        await store.close()
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=10_000)]
        for i in range(0, len(keys), 10_000):
            await client.delete(*keys[i:i + 10_000])
        await client.aclose()


async def _script_usec(client: Redis) -> int:
    """Microseconds Redis spent running scripts so far (every client's)."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get(
        "ICS_SMS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.redis_url, args.messages))
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
