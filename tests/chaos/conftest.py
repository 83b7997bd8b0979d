"""Fixtures of the fault suite, and the table of figures at the end of the session.

Each scenario runs in two sizes through ``harness.profiles()``: ``fast`` (not marked:
part of every CI run) and ``full`` (marked ``chaos``: ``python -m pytest -m chaos``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.chaos.harness import Stack
from tests.chaos.results import RESULTS, format_table, write_results

MakeStack = Callable[[str], Stack]


@pytest.fixture(scope="session")
def chaos_redis_url() -> str:
    """Redis for the message contexts the worker processes write (like production)."""
    url = os.environ.get("ICS_SMS_REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means "not usable"; the reason is reported
        reason = f"Redis at {url} is not reachable ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs Redis: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def make_stack(rabbitmq_url: str, chaos_redis_url: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[MakeStack]:
    """Stacks for the test (a namespace, processes, a ledger each); all torn down after.

    When the test failed, the tail of every process log is printed.
    """
    stacks: list[Stack] = []

    def make(name: str) -> Stack:
        folder = tmp_path / f"{name}-{len(stacks)}"
        folder.mkdir()
        stack = Stack(name, folder, rabbitmq_url, chaos_redis_url)
        stacks.append(stack)
        return stack

    yield make
    report = getattr(request.node, "chaos_call_report", None)
    for stack in stacks:
        if report is not None and report.failed:
            print(f"\n==== diagnostics of {stack.name} ====\n{stack.diagnostics()}")
        stack.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.chaos_call_report = report  # type: ignore[attr-defined]
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("ics-sms fault suite: figures")
    for line in format_table(RESULTS):
        terminalreporter.write_line(line)
    path = write_results(RESULTS)
    terminalreporter.write_line(f"figures written to {path}")
