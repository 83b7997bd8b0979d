"""``--plot FILE.png``: throughput of every stage against its limit, and latencies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ics_sms.bench.report import P99_TARGET_MS, RATE_TARGETS
from ics_sms.bench.results import StageResult
from ics_sms.bench.runner import BenchReport

__all__ = ["write_plot"]

_GOALS = {key: goal for key, _name, goal, _unit in RATE_TARGETS}
_OURS = "#2f6fb0"
_LIMIT = "#9aa5b1"


def _throughput(ax: Any, stages: list[StageResult]) -> None:
    from matplotlib.patches import Patch

    names = [s.title for s in stages]
    medians = [s.median or 0.0 for s in stages]
    colours = [_LIMIT if s.key.startswith("limit_") else _OURS for s in stages]
    rows = range(len(stages))
    ax.barh(rows, medians, color=colours)
    ax.scatter([s.best or 0.0 for s in stages], rows, color="black", marker="|", s=200,
               label="best", zorder=3)
    for row, stage in zip(rows, stages, strict=True):
        goal = _GOALS.get(stage.key)
        if goal is not None:
            ax.scatter([goal], [row], color="#d9534f", marker="x", s=60, zorder=4,
                       label="target" if stage.key == "worker_1" else None)
        ax.annotate(f"{stage.median or 0:,.0f}", (stage.median or 0, row), xytext=(4, -4),
                    textcoords="offset points", fontsize=8)
    ax.set_yticks(list(rows), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("per second")
    ax.set_title("throughput")
    handles, _labels = ax.get_legend_handles_labels()
    handles += [Patch(color=_OURS, label="median, ics-sms"),
                Patch(color=_LIMIT, label="median, bare pika limit")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4,
              fontsize=8)


def _latency(ax: Any, stages: list[StageResult]) -> None:
    width = 0.35
    points = ["p50", "p95", "p99"]
    for offset, stage in enumerate(stages):
        sample = stage.median_sample()
        values = [sample.latency_ms.get(p, 0.0) if sample else 0.0 for p in points]
        xs = [i + offset * width for i in range(len(points))]
        ax.bar(xs, values, width, label=stage.title)
        for x, value in zip(xs, values, strict=True):
            ax.annotate(f"{value:,.0f}", (x, value), ha="center", va="bottom", fontsize=8)
    ax.axhline(P99_TARGET_MS, color="#d9534f", linestyle="--", label="p99 target")
    top = ax.get_ylim()[1]
    if top > 10 * P99_TARGET_MS:
        ax.set_yscale("log")
        ax.set_ylim(top=top * 4)
    else:
        ax.set_ylim(top=top * 1.3)
    ax.set_xticks([i + width / 2 for i in range(len(points))], points)
    ax.set_ylabel("ms, publish → submitted (median run)")
    ax.set_title("service-lane latency")
    ax.legend(loc="upper left", fontsize=8)


def write_plot(report: BenchReport, path: Path) -> None:
    """Write the charts as a PNG (needs matplotlib)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 6), layout="constrained")
    rates = [s for s in report.stages.values() if not s.latency]
    latencies = [s for s in report.stages.values() if s.latency]
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    if rates:
        _throughput(left, rates)
    if latencies:
        _latency(right, latencies)
    machine = report.machine
    figure.suptitle(f"ics-sms bench: {machine['nproc']} cores, RabbitMQ "
                    f"{report.broker['version']}, {report.options.queue_type.value} queues, "
                    f"{report.options.runs} run(s), load {machine['load_average_start'][0]}")
    figure.savefig(path, dpi=110)
