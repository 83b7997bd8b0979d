"""Small helpers the stages share."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from ics_sms.bench.context import RunContext
from ics_sms.bench.system import CpuMeter
from ics_sms.schemas.settings import Settings

__all__ = ["cpu_meter", "sandbox_stats", "tag_of", "task_problem", "timeout_for"]


def cpu_meter(ctx: RunContext, **roles: list[int]) -> CpuMeter:
    """CPU of ``roles`` plus the broker, the sandbox and this process (events, load)."""
    return CpuMeter({**roles, "broker": ctx.broker_pids, "sandbox": [ctx.sandbox_pid],
                     "bench": [os.getpid()]})


def tag_of(settings: Settings) -> str:
    """Message ids of a stage run start with its namespace: unique across runs."""
    return settings.namespace.rstrip(".")


def timeout_for(ctx: RunContext, messages: int) -> float:
    """A generous bound for one wait: the option, plus time for large counts."""
    return ctx.options.stage_timeout_s + messages / 1000


async def sandbox_stats(ctx: RunContext) -> dict[str, Any]:
    """The sandbox's counters (``GET /_stats``)."""
    async with aiohttp.ClientSession() as session, \
            session.get(ctx.sandbox_url + "/_stats") as response:
        stats: dict[str, Any] = await response.json()
        return stats


def task_problem(task: asyncio.Future[Any]) -> str | None:
    """Why a background task failed, once it did."""
    if task.done() and not task.cancelled() and task.exception() is not None:
        return f"publishing failed: {task.exception()!r}"
    return None
