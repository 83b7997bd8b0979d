"""``ics-sms bench``: every stage runs on real RabbitMQ and accounts for every message.

The quick mode checks that the benchmark works, not how fast anything is: no assertion
here is about timing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner
from pika.spec import BasicProperties

from ics_sms.bench.amqp import PikaLink
from ics_sms.bench.messages import sample_body
from ics_sms.bench.profile import library_of, summarize
from ics_sms.bench.relay import event_template, relay
from ics_sms.bench.report import targets, worker_per_relay
from ics_sms.bench.results import Sample, StageResult
from ics_sms.bench.system import CpuMeter, broker_pids
from ics_sms.broker.connect import open_broker
from ics_sms.cli.bench_cmd import bench_command
from ics_sms.schemas.messages import ReceiptEvent, Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings

RATE_STAGES = {"limit_publish", "limit_consume", "limit_relay", "publish", "worker_1",
               "worker_2", "e2e", "ingest"}
LATENCY_STAGES = {"latency", "latency_backlog"}


@pytest.fixture(scope="module")
def quick_run(rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[dict[str, Any], Path]:
    plot = tmp_path_factory.mktemp("bench") / "bench.png"
    result = CliRunner().invoke(bench_command, ["--quick", "--json", "--broker", rabbitmq_url,
                                                "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), plot


def test_quick_bench_reports_every_stage(quick_run: tuple[dict[str, Any], Path]) -> None:
    data, _plot = quick_run
    assert set(data["stages"]) == RATE_STAGES | LATENCY_STAGES
    assert {"machine", "broker", "options", "ratio_to_limit", "memory_mib", "targets",
            "accounted_for_every_message"} <= set(data)
    assert data["machine"]["nproc"] >= 1 and data["broker"]["version"]
    assert "guest:guest" not in json.dumps(data)
    for key in RATE_STAGES:
        stage = data["stages"][key]
        assert stage["metric"] == "rate_per_s" and stage["best"] > 0 and stage["median"] > 0
    for key in LATENCY_STAGES:
        run = data["stages"][key]["runs"][0]
        assert {"p50", "p95", "p99"} <= set(run["latency_ms"])
    assert set(data["ratio_to_limit"]) == {"publish", "worker_1", "worker_2", "e2e", "ingest"}
    assert {t["met"] for t in data["targets"]} <= {"met", "best run only", "not met"}
    relay = data["worker_per_relay"]
    assert relay["rate"] == data["ratio_to_limit"]["worker_1"]["median"] > 0
    assert relay["cpu"] == pytest.approx(relay["relay_cpu_us"] / relay["worker_cpu_us"], 1e-2)


def test_quick_bench_accounts_for_every_message(quick_run: tuple[dict[str, Any], Path]
                                                ) -> None:
    data, _plot = quick_run
    assert data["accounted_for_every_message"] is True
    for key, stage in data["stages"].items():
        assert stage["complete"], key
        for run in stage["runs"]:
            assert run["error"] is None, (key, run["error"])
            assert run["accounted"] == run["count"] > 0, key
            assert run["duplicates"] == 0, key
    ingest = data["stages"]["ingest"]["runs"][0]["extra"]
    assert ingest["events_in_queue"] == ingest["confirmed_receipts"] == 1000
    backlog = data["stages"]["latency_backlog"]["runs"][0]["extra"]
    assert backlog["backlog"] == 2000 and backlog["service_messages"] > 0


def test_quick_bench_measures_memory_and_plots(quick_run: tuple[dict[str, Any], Path]) -> None:
    data, plot = quick_run
    assert data["memory_mib"]["worker_peak_rss"] > 0
    assert data["memory_mib"]["receiver_peak_rss"] > 0
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_refuses_the_embedded_broker() -> None:
    result = CliRunner().invoke(bench_command, ["--quick", "--broker", "memory://"])
    assert result.exit_code != 0 and "amqp://" in result.output


def test_best_and_median_ignore_incomplete_runs() -> None:
    stage = StageResult("worker_1", "worker", "msg/s", samples=[
        Sample(count=10, accounted=10, elapsed_s=1.0),
        Sample(count=10, accounted=10, elapsed_s=2.0),
        Sample(count=10, accounted=10, elapsed_s=4.0),
        Sample(count=10, accounted=9, elapsed_s=0.1),
    ])
    assert stage.best == 10.0 and stage.median == 5.0 and not stage.complete
    latency = StageResult("latency", "latency", "ms", latency=True, samples=[
        Sample(count=1, accounted=1, elapsed_s=1.0, latency_ms={"p99": p}) for p in (30, 10, 20)
    ])
    assert latency.best == 10 and latency.median == 20


def test_profile_summary_splits_own_and_inclusive_time() -> None:
    lines = [
        "main (ics_sms/cli/main.py:4);_submit (workers/service.py:9);"
        "validate (pydantic/main.py:3) 3\n",
        "main (ics_sms/cli/main.py:4);_submit (workers/service.py:9) 1\n",
        "main (ics_sms/cli/main.py:4);run (asyncio/base_events.py:5) 4\n",
    ]
    summary = summarize(lines)
    assert summary.samples == 8
    assert summary.own["validate (pydantic/main.py)"] == 3
    assert summary.inclusive["_submit (workers/service.py)"] == 4
    assert summary.own_by_library["stdlib:asyncio"] == 4
    assert summary.by_our_caller[("_submit (workers/service.py)", "pydantic")] == 3
    assert library_of("/x/site-packages/pika/frame.py") == "pika"
    assert library_of("workers/jobs.py") == "ours:workers"


def test_worker_is_held_to_the_bare_relay() -> None:
    def rate(key: str, per_s: float) -> StageResult:
        return StageResult(key, key, "msg/s", samples=[
            Sample(count=int(per_s), accounted=int(per_s), elapsed_s=1.0)])

    stages = {s.key: s for s in (rate("worker_1", 4000), rate("limit_relay", 10000),
                                 rate("limit_consume", 40000))}
    ratio = {t.name: t for t in targets(stages)}["worker stage, 1 process / bare relay"]
    assert ratio.median == pytest.approx(0.4) and ratio.goal == 0.7 and ratio.met == "not met"
    stages["worker_1"].samples[0].extra["cpu_us_per_msg"] = {"worker": 90.0}
    stages["limit_relay"].samples[0].extra["cpu_us_per_msg"] = {"relay": 30.0}
    assert worker_per_relay(stages) == {"rate": 0.4, "cpu": 0.333, "worker_cpu_us": 90.0,
                                        "relay_cpu_us": 30.0}


def test_relay_event_is_a_submitted_event_of_the_request() -> None:
    parts = event_template(Settings(namespace="bench-x."))
    event = ReceiptEvent.model_validate_json(b"camp-7".join(parts))
    assert event.message_id == "camp-7" and event.status is Status.SUBMITTED
    assert event.event_id == "camp-7-submitted"


async def test_relay_turns_each_request_into_one_confirmed_event_and_acks_it(
        amqp_settings: Settings) -> None:
    topology = amqp_settings.topology
    broker = await open_broker(amqp_settings, name="test declare")
    try:
        await broker.declare(topology)
    finally:
        await broker.close()
    link = await PikaLink.open(amqp_settings.broker_url.get_secret_value(), "test relay")
    send_queue = topology.send_queue(Lane.SERVICE)
    try:
        for n in range(50):
            link.channel.basic_publish(
                topology.send_exchange, topology.send_routing_key(Lane.SERVICE),
                sample_body(topology), BasicProperties(delivery_mode=2, message_id=f"m-{n}"))
        stop = asyncio.Event()
        task = asyncio.create_task(relay(amqp_settings, stop))
        async with asyncio.timeout(60):
            while (await link.counts(topology.events_queue))[0] < 50:
                assert not task.done(), task
                await asyncio.sleep(0.01)  # polls the queue depth
        stop.set()
        await task
        assert await link.counts(topology.events_queue) == (50, 0)
        assert await link.counts(send_queue) == (0, 0)  # every request acked
    finally:
        await link.close()


def test_broker_pids_are_local_listeners_only(rabbitmq_url: str) -> None:
    assert broker_pids("amqp://guest:guest@203.0.113.9:5672/") == []
    assert all(psutil.pid_exists(pid) for pid in broker_pids(rabbitmq_url))


def test_cpu_meter_counts_the_cpu_of_each_role() -> None:
    me = psutil.Process()
    gone = psutil.Popen(["true"])
    gone.wait()
    meter = CpuMeter({"bench": [me.pid], "gone": [gone.pid]})
    meter.start()
    before = sum(me.cpu_times()[:2])
    while sum(me.cpu_times()[:2]) == before:  # spin until the kernel charged us a tick
        pass
    per_message = meter.stop(count=2)
    assert per_message["bench"] > 0 and per_message["gone"] == 0


def test_lane_workers_are_read_as_processes_per_lane_choice() -> None:
    from ics_sms.bench.options import BenchOptions, parse_lane_workers

    lanes = parse_lane_workers("service=1, promotional=2")
    assert lanes == (("service", 1), ("promotional", 2))
    options = BenchOptions(lane_workers=lanes)
    assert (options.consumers_of("service"), options.consumers_of("promotional")) == (1, 2)
    mixed = BenchOptions(pipeline_workers=3)
    assert mixed.latency_workers() == (("all", 3),)
    assert (mixed.consumers_of("service"), mixed.consumers_of("promotional")) == (3, 3)
    assert parse_lane_workers("all=1,service=2") == (("all", 1), ("service", 2))


@pytest.mark.parametrize(("text", "reason"), [
    ("service=1", "some worker must consume each lane"),
    ("bulk=1,service=1", "LANES one of service, promotional, all"),
    ("service=0,promotional=1", "COUNT must be a number from 1 to 16"),
    ("service,promotional=1", "write LANES=COUNT"),
    ("all=1,all=2", "'all' is given twice"),
])
def test_lane_workers_that_cannot_work_are_refused(text: str, reason: str) -> None:
    result = CliRunner().invoke(bench_command, ["--quick", "--lane-workers", text])
    assert result.exit_code == 2 and reason in result.output, result.output


def test_the_latency_stage_runs_with_dedicated_lane_workers(rabbitmq_url: str) -> None:
    result = CliRunner().invoke(bench_command, [
        "--quick", "--json", "--broker", rabbitmq_url, "--stage", "latency",
        # a backlog a dedicated promotional worker cannot drain before the paced service
        # messages start (--quick's 2,000 can be gone within the warm-up on a quiet machine)
        "--backlog", "20000",
        "--lane-workers", "service=1,promotional=1", "--promotional-nice", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accounted_for_every_message"] is True
    backlog = data["stages"]["latency_backlog"]["runs"][0]
    assert backlog["accounted"] == backlog["count"] > 20000  # service messages measured too
    assert backlog["extra"]["lane_workers"] == {"service": 1, "promotional": 1}
    assert backlog["extra"]["workers"] == 2 and backlog["extra"]["promotional_nice"] == 5
    assert data["options"]["lane_workers"] == [["service", 1], ["promotional", 1]]
