"""The machine and its processes, through psutil: what the numbers were measured on, the
broker's process, and CPU time per message by process.

CPU per message is robust where throughput is not (a shared machine): a stage slowed by a
neighbour costs the same CPU seconds per message; a stage whose code got slower costs
more. The broker's figure is RabbitMQ's whole CPU, whoever made it work.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

__all__ = ["CpuMeter", "broker_pids", "load_average", "machine_info", "peak_rss_mb"]

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", None})


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in psutil.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def broker_pids(url: str) -> list[int]:
    """The local process listening on the broker URL's port (RabbitMQ's Erlang VM), so
    that another broker on the same machine is not counted; empty for a remote broker or
    when the process is not visible to us."""
    parts = urlsplit(url)
    if parts.hostname not in _LOCAL_HOSTS:
        return []
    port = parts.port or 5672
    try:
        sockets = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return []
    return sorted({s.pid for s in sockets if s.status == psutil.CONN_LISTEN
                   and s.laddr and s.laddr.port == port and s.pid is not None})


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size of a running process (Linux ``VmHWM``, which psutil does not
    expose), else its current RSS; in MiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # gone: what it spent is lost with it
        return 0.0
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds each role's processes spent between :meth:`start` and :meth:`stop`."""

    def __init__(self, roles: Mapping[str, Iterable[int]]) -> None:
        self._roles = {role: [p for p in map(_process, pids) if p is not None]
                       for role, pids in roles.items()}
        self._start: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<CpuMeter roles={sorted(self._roles)} started={bool(self._start)}>"

    def _now(self) -> dict[str, float]:
        return {role: sum(map(_cpu_s, processes)) for role, processes in self._roles.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self, count: int) -> dict[str, float]:
        """CPU microseconds per message (of ``count``) of each role, since :meth:`start`."""
        end = self._now()
        return {role: round((end[role] - self._start.get(role, 0.0)) / max(count, 1) * 1e6, 1)
                for role in self._roles}
