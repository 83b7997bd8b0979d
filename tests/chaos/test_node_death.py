"""Scenario: a RabbitMQ node dies (kill -9) in the middle of a campaign (issue 15).

A cluster of three nodes of its own (:mod:`tests.chaos.cluster`; the machine's shared broker
is never touched), quorum queues with a member on each node, and every client - the two
workers, the receiver and the producer library - configured with the three addresses
(``ICS_SMS_BROKER_URL=amqp://...@a/,amqp://...@b/,...``), which they try in the order given.
The ledger and the probes talk to node ``c``, which never dies.

- **leader**: the node that leads every queue of the namespace dies (the topology is
  declared through it first); the services, connected to another node, keep their
  connections while the queues elect new leaders on the surviving nodes.
- **connected**: the node every service is connected to dies; each reconnects to the next
  address (the queue leaders live elsewhere).

Expected: no message lost, no SMS sent twice (the sandbox counts every record it accepts
per smsgid), one final event per message; recovery time = from the kill until new leaders
are elected, both workers consume again from a live node, the receiver is ready again on a
live node and the producer has its next confirm, whichever is last.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ics_sms.broker.admin import declare_topology
from tests.chaos.campaign import RECEIPTED_OUTCOMES, build_campaign
from tests.chaos.cluster import ClusterUnavailable, RabbitCluster, cluster_problem
from tests.chaos.harness import (
    FAST,
    FULL,
    Stack,
    http_request,
    poll_until,
    profiles,
    wait_for,
)
from tests.chaos.scenario import finish

SIZES = {
    FAST: {"messages": 2_000, "publish_rate": 200},
    FULL: {"messages": 20_000, "publish_rate": 800},
}
RECOVERY_BOUND_S = 30.0
WORKERS = 2
WITNESS = "c"
"""The node the ledger and the probes use: never killed."""
SERVICE_CONNECTIONS = ("ics-sms worker", "ics-sms receiver", "chaos producer")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    """Three fresh nodes; killed and removed after the test, whatever happened."""
    problem = cluster_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs a local RabbitMQ installation for the cluster: {problem}")
        pytest.skip(problem)
    nodes = RabbitCluster(tmp_path / "cluster")
    try:
        yield nodes.start()
    finally:
        nodes.close()


def _ready(stack: Stack) -> bool:
    try:
        return http_request(f"http://127.0.0.1:{stack.receiver_port}/readyz",
                            timeout_s=2)[0] == 200
    except OSError:
        return False


def _recovery(cluster: RabbitCluster, stack: Stack, dead: str, killed_at: float,
              timeout_s: float = 120) -> dict[str, float]:
    """Seconds from the kill until: every queue of the namespace is led by a live node
    (``leaders_s``), both workers consume from a live node (``workers_s``), the receiver
    is ready on a live node (``receiver_s``). Each is watched by a thread of its own; one
    look takes a ``rabbitmqctl`` call (about a second here, more under load), so each
    figure is the end of the first look that saw it: an upper bound at that resolution
    (``*_look_s``: how long that look took)."""
    dead_name = cluster.nodes[dead].name

    def leaders() -> bool:
        found = cluster.leaders(stack.namespace)
        return bool(found) and dead_name not in found.values()

    def workers() -> bool:
        return (_on_live(cluster.connections(), dead, "ics-sms worker", WORKERS)
                and stack.worker_consumers() >= WORKERS)

    def receiver() -> bool:
        return _on_live(cluster.connections(), dead, "ics-sms receiver", 1) and _ready(stack)

    def watch(check: Callable[[], bool]) -> tuple[float, float]:
        while True:
            look = time.monotonic()
            with contextlib.suppress(ClusterUnavailable):  # a node still being declared down
                if check():
                    return time.monotonic() - killed_at, time.monotonic() - look
            if time.monotonic() - killed_at > timeout_s or stack.crashed() is not None:
                raise AssertionError(f"not recovered within {timeout_s:g}s "
                                     f"({stack.crashed()})")
            time.sleep(0.1)

    checks = {"leaders": leaders, "workers": workers, "receiver": receiver}
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(watch, check) for name, check in checks.items()}
        seen = {name: future.result() for name, future in futures.items()}
    found = {f"{name}_s": at for name, (at, _look) in seen.items()}
    found.update({f"{name}_look_s": look for name, (_at, look) in seen.items()})
    return found


class FlowSampler(threading.Thread):
    """Every 0.1 s, the sandbox's counts of ICS requests and of receipts the receiver
    accepted: when the flow stalled, at that resolution."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="flow-sampler", daemon=True)
        assert stack.sandbox is not None
        self.sandbox = stack.sandbox
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError, AssertionError):
                stats = self.sandbox.stats()
                self.samples.append((time.monotonic(), int(stats["requests"]),
                                     int(stats["receipts_posted"])))
            self.done.wait(0.1)

    def stop(self) -> None:
        self.done.set()
        self.join(10)

    def stall(self, column: int, after: float) -> float | None:
        """The longest time between two increases of a count that ends after ``after``."""
        rises = [t for (_t, *before), (t, *now) in itertools.pairwise(self.samples)
                 if now[column] > before[column]]
        return _longest_gap(rises, after)


def _on_live(where: dict[str, list[str]], dead: str, name: str, count: int) -> bool:
    return (name not in where.get(dead, [])
            and sum(names.count(name) for names in where.values()) >= count)


def _longest_gap(times: list[float], after: float) -> float | None:
    """The longest gap between two successive instants that ends after ``after`` (None:
    nothing happened after it)."""
    ordered = sorted(times)
    return max((later - earlier for earlier, later in itertools.pairwise(ordered)
                if later > after), default=None)


def run_node_death(stack: Stack, cluster: RabbitCluster, profile: str, victim: str) -> None:
    size = SIZES[profile]
    # every queue of the namespace is declared through node a first, so that a leads them
    declare_topology(cluster.url("a"), stack.topology)
    leaders = cluster.leaders(stack.namespace)
    assert leaders and set(leaders.values()) == {cluster.nodes["a"].name}, leaders
    order = ("b", "a", "c") if victim == "connected" else ("b", "c", "a")
    stack.service_broker_url = cluster.urls(order)
    stack.probe.rabbitmqctl = str(cluster.ctl_path)  # unacked counts, from the witness
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=WORKERS, sandbox=["--receipt-retry-cap-ms", "5000",
                                          "--receipt-max-attempts", "30"])
    # fixed fates that end with a receipt: a batch in flight when the worker's connection
    # drops is abandoned as uncertain (never sent again); its messages end by their receipt,
    # and a record ICS refused has none (it would end only at the receipt deadline)
    campaign = build_campaign(size["messages"], f"node-{victim}-{profile}",
                              service="chaos-otp", promotional="chaos-offers",
                              fixed=RECEIPTED_OUTCOMES)
    ids = campaign.ids
    publisher = stack.publisher(campaign, via=stack.service_broker_url, chunk=100,
                                rate_per_s=size["publish_rate"])
    started = time.monotonic()
    flow = FlowSampler(stack)
    flow.start()
    publisher.start()
    wait_for(lambda: len(publisher.confirmed_ids()) >= len(ids) * 4 // 10
             and ledger.progress(ids) >= len(ids) // 20, timeout_s=300,
             what="40% of the campaign published and 5% under way", crashed=stack.crashed)

    before = cluster.connections()
    on_b = [name for name in before["b"] if name in SERVICE_CONNECTIONS]
    assert sorted(on_b) == sorted(["chaos producer", "ics-sms receiver",
                                   *["ics-sms worker"] * WORKERS]), before
    dead = "a" if victim == "leader" else "b"
    assert dead != WITNESS
    during: dict[str, Any] = {
        "killed": cluster.nodes[dead].name,
        "services_on": cluster.nodes["b"].name,
        "published_at_kill": round(len(publisher.confirmed_ids()) / len(ids), 3),
        "progress_at_kill": round(ledger.progress(ids) / len(ids), 3)}
    killed_at = cluster.kill(dead)
    recovery = _recovery(cluster, stack, dead, killed_at)
    publisher.join(600)
    poll_until(lambda: ledger.finished(ids) >= len(ids), 600)  # finish() says what is missing
    flow.stop()
    stall = _longest_gap(publisher.confirm_times, killed_at)
    if stall is not None:
        recovery["producer_s"] = stall  # the longest wait for a confirm
    stalls = {"ics_requests_stall_s": flow.stall(0, killed_at),
              "receipts_stall_s": flow.stall(1, killed_at)}
    after = cluster.connections()
    figures = {**during, "fault": f"kill -9 {victim} node",
               "recovery": {k: round(v, 2) for k, v in recovery.items()},
               "connections_after": {cluster.nodes[k].name: sorted(v) for k, v in after.items()
                                     if v},
               "new_leaders": sorted(set(cluster.leaders(stack.namespace).values())),
               "flow_stalls": {k: None if v is None else round(v, 2)
                               for k, v in stalls.items()},
               "producer_errors": publisher.errors}
    recovery_s = max(v for k, v in recovery.items() if not k.endswith("_look_s"))
    problems = list(publisher.errors)
    if recovery_s > RECOVERY_BOUND_S:
        problems.append(f"recovery took {recovery_s:.1f}s (bound {RECOVERY_BOUND_S:g}s): "
                        f"{figures['recovery']}")
    if stall is None:
        problems.append("the producer confirmed nothing after the kill although it was "
                        "still publishing when the node died")
    row = finish(stack, scenario=f"node dies ({victim})", profile=profile,
                 expected=campaign.expected, confirmed=publisher.confirmed_ids(),
                 started=started, settle_timeout_s=600, recovery_s=recovery_s,
                 figures=figures, problems=problems, effectively_once=True)
    leaks = [role for role, text in stack.logs().items() if cluster.password in text]
    assert not leaks, f"the broker password is in the logs of {leaks}"
    assert row.passed, "\n".join(row.problems)


@pytest.mark.parametrize("victim", ["leader", "connected"])
@pytest.mark.parametrize("profile", profiles())
def test_a_node_dies_mid_campaign(profile: str, victim: str, cluster: RabbitCluster,
                                  chaos_redis_url: str, tmp_path: Path) -> None:
    folder = tmp_path / f"node-{victim}"
    folder.mkdir()
    stack = Stack(f"node-{victim}", folder, cluster.url(WITNESS), chaos_redis_url)
    # the whole cluster goes after the test: deleting the namespace's queues one by one
    # would only wait out the dead member of each (5 s a queue)
    stack._delete_namespace = lambda: None  # type: ignore[method-assign]
    try:
        run_node_death(stack, cluster, profile, victim)
    except BaseException:
        print(f"\n==== diagnostics of node-{victim} ====\n{stack.diagnostics()}")
        for node in cluster.nodes.values():
            print(f"--- {node!r}\n{cluster.log_tail(node)}")
        raise
    finally:
        stack.close()
