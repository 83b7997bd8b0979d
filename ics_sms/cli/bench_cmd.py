"""``ics-sms bench``: throughput, latency, memory and limits of every stage on RabbitMQ.

The benchmark itself (:mod:`ics_sms.bench`) is imported when the command runs, so that
registering the command costs the other commands (a worker, a receiver) nothing at start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ics_sms.bench.options import DEFAULT_BROKER_URL, BenchOptions, Stage, parse_lane_workers
from ics_sms.cli.common import CliError, load_settings
from ics_sms.logs import configure_logging
from ics_sms.schemas.settings import WorkerLanes
from ics_sms.schemas.topology import QueueType

if TYPE_CHECKING:
    from ics_sms.bench.runner import BenchReport

__all__ = ["bench_command"]

_INTERRUPTED = 130


def _broker_url(given: str | None) -> str:
    url = given or load_settings().broker_url.get_secret_value()
    if url.startswith("memory:"):
        if given:
            raise CliError("the benchmark measures RabbitMQ: give an amqp:// URL")
        url = DEFAULT_BROKER_URL
    return url


def _options(quick: bool, broker_url: str | None, stages: tuple[str, ...],
             given: dict[str, Any]) -> BenchOptions:
    base = BenchOptions.quick() if quick else BenchOptions()
    changes = {k: v for k, v in given.items() if v is not None}
    if stages:
        changes["stages"] = tuple(s for s in Stage if s.value in stages)
    if "queue_type" in changes:
        changes["queue_type"] = QueueType(changes["queue_type"])
    return base.but(broker_url=_broker_url(broker_url),
                    redis_url=load_settings().redis_url, **changes)


def _lane_workers(_ctx: click.Context, _param: click.Parameter, value: str | None
                  ) -> tuple[tuple[WorkerLanes, int], ...] | None:
    if value is None:
        return None
    try:
        return parse_lane_workers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _progress(line: str) -> None:
    click.echo(line, err=True)


async def _until_signalled(options: BenchOptions) -> BenchReport:
    """The benchmark, cancelled by SIGTERM as by Ctrl-C (asyncio's own SIGINT handling):
    either way the stages stop their children and delete their namespaces."""
    from ics_sms.bench.runner import run_bench

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_bench(options, _progress)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run(options: BenchOptions) -> BenchReport:
    from ics_sms.bench.procs import terminate_leftovers

    try:
        return asyncio.run(_until_signalled(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("interrupted: child processes stopped, namespaces deleted", err=True)
        raise SystemExit(_INTERRUPTED) from None
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise CliError(f"bench could not run: {exc}") from None
    finally:
        if terminate_leftovers():
            click.echo("killed child processes left running", err=True)


@click.command("bench")
@click.option("--broker", "broker_url", metavar="URL",
              help="RabbitMQ to measure  [default: ICS_SMS_BROKER_URL, else the local one]")
@click.option("--messages", type=click.IntRange(1), help="Send requests per run of the publish, "
              "worker and limit stages  [default: 50,000; --quick: 600]")
@click.option("--e2e-messages", type=click.IntRange(1),
              help="Messages per end-to-end run  [default: 20,000; --quick: 300]")
@click.option("--workers", type=click.IntRange(1, 16),
              help="The worker stage runs with 1, 2 ... this many processes  [default: 2]")
@click.option("--pipeline-workers", type=click.IntRange(1, 16),
              help="Worker processes of the end-to-end and latency stages  [default: 1]")
@click.option("--lane-workers", callback=_lane_workers, metavar="LANES=N[,...]",
              help="Latency stage: worker processes per --lanes value instead of "
                   "--pipeline-workers mixed ones, e.g. service=1,promotional=1")
@click.option("--promotional-nice", type=click.IntRange(0, 19),
              help="Niceness of the promotional-only --lane-workers: on one machine they "
                   "share the cores, on a cluster each lane's pods have CPU of their own  "
                   "[default: 0]")
@click.option("--batch-size", "batch_max", type=click.IntRange(1, 1000),
              help="Most messages in one ICS request (ICS_SMS_BATCH_MAX)  [default: 1000]")
@click.option("--prefetch", type=click.IntRange(1, 65535),
              help="Worker prefetch, also of the bare consume loop  [default: 2000]")
@click.option("--linger-ms", type=click.FloatRange(0), help="Worker batch linger  [default: 20]")
@click.option("--queue-type", type=click.Choice([t.value for t in QueueType]),
              help="Queue type of every queue  [default: quorum]")
@click.option("--receipts", type=click.IntRange(1),
              help="Receipts per ingest run  [default: 200,000; --quick: 1,000]")
@click.option("--receipt-batch", type=click.IntRange(1, 1000),
              help="Receipts per POST  [default: 100]")
@click.option("--concurrency", type=click.IntRange(1, 1024),
              help="Receipt POSTs in flight  [default: 64]")
@click.option("--backlog", type=click.IntRange(0),
              help="Promotional backlog of the latency stage  [default: 100,000; --quick: 2,000]")
@click.option("--latency-seconds", "latency_s", type=click.FloatRange(0.1),
              help="How long the paced publisher runs  [default: 10; --quick: 1.5]")
@click.option("--latency-load", type=click.FloatRange(0.01, 1.0),
              help="Service pace as a share of the best worker rate  [default: 0.5]")
@click.option("--latency-rate", type=click.FloatRange(1),
              help="A fixed service pace in msg/s instead of --latency-load.")
@click.option("--runs", type=click.IntRange(1, 20),
              help="Runs of every stage (best and median)  [default: 3; --quick: 1]")
@click.option("--stage", "stages", multiple=True, type=click.Choice([s.value for s in Stage]),
              help="Run only this stage (repeatable)  [default: all]")
@click.option("--quick", is_flag=True, help="Small counts and one run: does every stage work?")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON results to this file.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write throughput and latency charts to this PNG (needs matplotlib).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False),
              help="Sample a worker and the receiver with py-spy into this folder.")
def bench_command(broker_url: str | None, stages: tuple[str, ...], quick: bool, as_json: bool,
                  json_out: Path | None, plot: Path | None, **given: Any) -> None:
    """Measure every stage on RabbitMQ with the ICS sandbox answering at once.

    Stages: the limits of broker and client (bare pika loops, and the bare relay: the
    ceiling of a worker process), publishing through the producer, the worker stage
    (1..N processes), end to end, receipt ingest, and service-lane latency (steady, and
    while a promotional backlog drains). Each run uses a namespace of its own and deletes
    it; exits non-zero unless every message of every run was accounted for.
    """
    from ics_sms.bench.report import print_report, report_json

    configure_logging("warning")
    options = _options(quick, broker_url, stages, given)
    if options.profile_dir is not None and shutil.which("py-spy") is None:
        raise CliError("--profile needs py-spy on the PATH: pip install py-spy")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise CliError("--plot needs matplotlib: pip install matplotlib")
    report = _run(options)
    data = report_json(report)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_report(report, data)
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=2) + "\n")
    if plot is not None:
        from ics_sms.bench.plot import write_plot

        write_plot(report, plot)
        click.echo(f"charts written to {plot}", err=True)
    if not data["accounted_for_every_message"]:
        raise CliError("some runs did not account for every message (see the runs above)")
