"""Starting the services as the operator would: ``ics-sms worker``, receiver, sandbox."""

from __future__ import annotations

import sys

from ics_sms.bench.context import child_environment
from ics_sms.bench.procs import Child, Children, free_port
from ics_sms.bench.waits import wait_http_ok
from ics_sms.schemas.settings import Settings, WorkerLanes

__all__ = ["start_receiver", "start_relay", "start_sandbox", "start_workers"]

_START_TIMEOUT_S = 60.0


async def start_workers(children: Children, settings: Settings, count: int,
                        lanes: WorkerLanes = "all", nice: int = 0) -> list[Child]:
    """``count`` worker processes (``python -m ics_sms worker --lanes LANES``), at
    niceness ``nice``; not waited for."""
    env = child_environment(settings)
    argv = [sys.executable, "-m", "ics_sms", "worker", "--lanes", lanes]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]  # nice execs the worker: same pid
    return [await children.spawn("worker", argv, env) for _ in range(count)]


async def start_relay(children: Children, settings: Settings) -> Child:
    """The bare relay (:mod:`ics_sms.bench.relay`) in a process of its own; not waited for."""
    return await children.spawn("relay", [sys.executable, "-m", "ics_sms.bench.relay"],
                                child_environment(settings))


async def start_receiver(children: Children, settings: Settings, port: int) -> Child:
    """A receiver process on ``port``, returned once ``/readyz`` answers (broker connected)."""
    argv = [sys.executable, "-m", "ics_sms.cli.receiver_cmd", "--port", str(port)]
    child = await children.spawn("receiver", argv, child_environment(settings))
    await wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout_s=_START_TIMEOUT_S,
                       what="the receiver", crashed=children.crashed)
    return child


async def start_sandbox(children: Children, settings: Settings) -> Child:
    """The ICS sandbox in its own process, answering at once, every receipt ``delivered``
    without delay; the accounts are those of the senders file. Its URL is ``child.url``."""
    port = free_port()
    argv = [sys.executable, "-m", "ics_sms", "sandbox", "--port", str(port),
            "--latency-ms", "0", "--receipt-delay-ms", "0", "--delivery-ratio", "1",
            "--click-ratio", "0", "--seed", "7"]
    child = await children.spawn("sandbox", argv, child_environment(settings))
    child.url = f"http://127.0.0.1:{port}"
    await wait_http_ok(child.url + "/_stats", timeout_s=_START_TIMEOUT_S, what="the ICS sandbox",
                       crashed=children.crashed)
    return child
