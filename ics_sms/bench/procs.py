"""Child processes of a benchmark: started, watched, measured and always stopped.

Every child is stopped when its :class:`Children` block ends, whatever ends it (an error,
a timeout, Ctrl-C cancelling the run): SIGTERM first, SIGKILL after a grace period. The
peak resident memory of a child (``VmHWM``) is read just before it is stopped.
:func:`terminate_leftovers` is the command's last safety net for a child still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from ics_sms.bench.system import peak_rss_mb

__all__ = ["Child", "Children", "free_port", "terminate_leftovers"]

log = structlog.get_logger(__name__)

_GRACE_S = 15.0
_LIVE: dict[int, asyncio.subprocess.Process] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class Child:
    """One child process and where its output goes."""

    role: str
    process: asyncio.subprocess.Process
    log_path: Path
    peak_rss_mb: float | None = None
    url: str = ""
    profile: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def measure(self) -> None:
        if self.running:
            self.peak_rss_mb = peak_rss_mb(self.pid) or self.peak_rss_mb


class Children:
    """The child processes of one stage run (an async context manager that stops them)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self.children: list[Child] = []

    def __repr__(self) -> str:
        running = sum(1 for c in self.children if c.running)
        return f"<Children {len(self.children)} started, {running} running>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def spawn(self, role: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        log_path = self._folder / f"{role}-{len(self.children)}.log"
        with log_path.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=output)
        _LIVE[process.pid] = process
        child = Child(role, process, log_path)
        self.children.append(child)
        return child

    async def profile(self, child: Child, output: Path, *, rate_hz: int = 250) -> None:
        """Sample ``child`` with py-spy (raw collapsed stacks) until it is stopped."""
        argv = ["py-spy", "record", "--pid", str(child.pid), "--format", "raw",
                "--output", str(output), "--rate", str(rate_hz), "--nonblocking"]
        log_path = self._folder / f"py-spy-{child.role}-{child.pid}.log"
        with log_path.open("wb") as sink:
            child.profile = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink)
        _LIVE[child.profile.pid] = child.profile

    def crashed(self) -> str | None:
        """Why a child is gone, when one exited before it was asked to stop."""
        for child in self.children:
            if not child.running:
                return (f"{child.role} (pid {child.pid}) exited with status "
                        f"{child.process.returncode}: {child.log_tail()}")
        return None

    def measure(self) -> None:
        for child in self.children:
            child.measure()

    def pids(self, role: str) -> list[int]:
        return [c.pid for c in self.children if c.role == role]

    def peak_rss_mb(self, role: str) -> float | None:
        values = [c.peak_rss_mb for c in self.children
                  if c.role == role and c.peak_rss_mb is not None]
        return max(values) if values else None

    async def stop(self) -> None:
        """Stop the profilers (they write on SIGINT), then every child; wait for all."""
        self.measure()
        for child in self.children:
            if child.profile is not None:
                await _stop(child.profile, signal.SIGINT)
        await asyncio.gather(*(_stop(c.process, signal.SIGTERM) for c in self.children))


async def _stop(process: asyncio.subprocess.Process, signum: int) -> None:
    """Signal, wait up to the grace period, then kill. Safe against a second cancel."""
    try:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                async with asyncio.timeout(_GRACE_S):
                    await process.wait()
            except TimeoutError:
                log.warning("child did not stop in time; killing it", pid=process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
    finally:
        if process.returncode is not None:
            _LIVE.pop(process.pid, None)


def terminate_leftovers() -> int:
    """Kill every child of ours still running (after an interrupted run); returns how many.

    Only unreaped children of this process are touched (``waitpid`` tells), so a pid that
    was reused by someone else is never signalled.
    """
    killed = 0
    for pid in list(_LIVE):
        _LIVE.pop(pid, None)
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                continue  # it had exited: now reaped
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed += 1
        except (ChildProcessError, ProcessLookupError):
            continue  # reaped already: not ours any more
    return killed
