"""``ics-sms bench``: every stage runs on real RabbitMQ and accounts for every message.

The quick mode checks that the benchmark works, not how fast anything is: no assertion
here is about timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ics_sms.bench.profile import library_of, summarize
from ics_sms.bench.results import Sample, StageResult
from ics_sms.cli.bench_cmd import bench_command

RATE_STAGES = {"limit_publish", "limit_consume", "publish", "worker_1", "worker_2", "e2e",
               "ingest"}
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
