"""The demo accounts for every message, on the embedded broker and on RabbitMQ."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ics_sms.cli.main import cli
from ics_sms.demo.display import PlainDisplay
from ics_sms.demo.run import DemoOptions, run_demo


async def test_embedded_demo_accounts_for_every_message() -> None:
    summary = await run_demo(DemoOptions(messages=600, timeout_s=60), PlainDisplay())
    assert summary["accounted_for"] == 600 and summary["unaccounted"] == 0
    assert set(summary["terminal"]) <= {"delivered", "failed", "rejected", "expired"}
    assert summary["events"]["submitted"] + summary["terminal"].get("rejected", 0) >= 600
    assert summary["events"].get("clicked", 0) > 0
    assert "failed:901" in summary["failure_codes"]
    assert summary["latency_ms"]["publish_to_delivered"]["p99"] > 0


async def test_demo_on_rabbitmq_with_worker_processes(rabbitmq_url: str) -> None:
    options = DemoOptions(messages=400, broker_url=rabbitmq_url, workers=2, timeout_s=90)
    summary = await run_demo(options, PlainDisplay())
    assert summary["unaccounted"] == 0 and summary["workers"] == 2
    assert "***" in summary["broker"] or "@" not in summary["broker"]


def test_demo_command_prints_a_json_summary() -> None:
    result = CliRunner().invoke(cli, ["demo", "--messages", "200", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # logs go to stderr, the summary alone to stdout
    assert summary["accounted_for"] == 200
