"""CPU time per message, by process: robust where throughput is not (a shared machine).

A stage that is slow because a neighbour took the CPU still costs the same CPU seconds per
message; a stage whose code got slower costs more. :class:`CpuMeter` reads ``utime +
stime`` of each role's processes from ``/proc`` at the start and at the end of the timed
interval. The broker's figure is RabbitMQ's whole CPU, whoever made it work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["CpuMeter", "broker_pids", "process_cpu_s"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_LISTEN = "0A"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", None})


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid`` (all its threads); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == _LISTEN:
                inodes.add(fields[9])
    return inodes


def broker_pids(url: str) -> list[int]:
    """The local process listening on the broker URL's port (RabbitMQ's Erlang VM), so
    that another broker on the same machine is not counted; empty for a remote broker."""
    parts = urlsplit(url)
    if parts.hostname not in _LOCAL_HOSTS:
        return []
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(parts.port or 5672)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & sockets:
            found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds each role's processes spent between :meth:`start` and :meth:`stop`."""

    def __init__(self, roles: Mapping[str, Iterable[int]]) -> None:
        self._roles = {role: list(pids) for role, pids in roles.items()}
        self._start: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<CpuMeter roles={sorted(self._roles)} started={bool(self._start)}>"

    def _now(self) -> dict[str, float]:
        return {role: sum(process_cpu_s(pid) or 0.0 for pid in pids)
                for role, pids in self._roles.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self, count: int) -> dict[str, float]:
        """CPU microseconds per message (of ``count``) of each role, since :meth:`start`."""
        end = self._now()
        return {role: round((end[role] - self._start.get(role, 0.0)) / max(count, 1) * 1e6, 1)
                for role in self._roles}
