"""What every stage run shares (sandbox, senders, broker link) and the namespace of each run.

Each stage run gets a namespace of its own (``bench-<stage>-<hex>.``) and deletes it, with
its message contexts in Redis, when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import time as clock_time
from pathlib import Path

import structlog
from pydantic import SecretStr
from redis.exceptions import RedisError

from ics_sms.bench.amqp import PikaLink
from ics_sms.bench.options import BenchOptions
from ics_sms.broker.admin import delete_topology
from ics_sms.schemas.senders import Senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.redis import delete_prefix

__all__ = ["RunContext", "child_environment", "stage_scope"]

log = structlog.get_logger(__name__)

_UNUSED_PUBLIC_URL = "http://127.0.0.1:9"
"""Where receipts would go in stages without a receiver (their numbers get none)."""


@dataclass(slots=True)
class RunContext:
    """Shared by every stage run of one benchmark."""

    options: BenchOptions
    folder: Path
    senders: Senders
    senders_file: Path
    callback_secret: str
    sandbox_url: str
    link: PikaLink
    """A bare connection for counters (consumers attached, queue depths)."""
    best_worker_rate: dict[int, float]
    """Best worker-stage rate per worker count so far: the latency stage paces from it."""
    sandbox_pid: int = 0
    broker_pids: list[int] = field(default_factory=list)

    def settings(self, namespace: str = "", public_url: str = _UNUSED_PUBLIC_URL) -> Settings:
        options = self.options
        return Settings(
            broker_url=SecretStr(options.broker_url), namespace=namespace,
            queue_type=options.queue_type, senders_file=self.senders_file,
            public_url=public_url, callback_secret=SecretStr(self.callback_secret),
            ics_url=self.sandbox_url, redis_url=options.redis_url,
            prefetch=options.prefetch, batch_max=options.batch_max,
            linger_ms=options.linger_ms, promo_window_start=clock_time(0),
            promo_window_end=clock_time(0), log_level="warning", connect_retry_s=10,
            metrics_port=0, receiver_metrics_port=0,
        )


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a service process: ours less any ``ICS_SMS_*``, plus the
    settings above, logging JSON lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS_SMS_")}
    return {**env, **settings.to_environment(), "ICS_SMS_LOG_FORMAT": "json"}


@asynccontextmanager
async def stage_scope(ctx: RunContext, stage: str, *,
                      public_url: str = _UNUSED_PUBLIC_URL) -> AsyncIterator[Settings]:
    """Settings on a fresh namespace for one stage run; the namespace is deleted after."""
    namespace = f"bench-{stage}-{uuid.uuid4().hex[:6]}."
    settings = ctx.settings(namespace, public_url)
    try:
        yield settings
    finally:
        await _cleanup(settings)  # runs after a cancel (Ctrl-C) too


async def _cleanup(settings: Settings) -> None:
    try:
        await asyncio.to_thread(delete_topology, settings.broker_url.get_secret_value(),
                                settings.topology)
    except Exception as exc:  # reported, and the next stage still runs
        log.warning("bench namespace not deleted", namespace=settings.namespace, error=repr(exc))
    await delete_contexts(settings)


async def delete_contexts(settings: Settings) -> None:
    """Delete the namespace's keys from Redis (a record per message, short links, rates,
    and the contexts older workers wrote)."""
    try:
        await delete_prefix(settings.redis_url, f"ics-sms:{settings.namespace}")
    except (RedisError, OSError) as exc:
        log.warning("bench keys not deleted", namespace=settings.namespace, error=str(exc))
