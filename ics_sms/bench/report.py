"""The benchmark's results: targets, ratios to the limits, JSON and the terminal table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ics_sms.bench.profile import format_summary, summarize
from ics_sms.bench.results import StageResult, rounded
from ics_sms.bench.runner import BenchReport

__all__ = ["LIMIT_OF", "P99_TARGET_MS", "RATE_TARGETS", "Target", "print_report", "report_json",
           "targets", "worker_per_relay"]

LIMIT_OF = {"publish": ("limit_publish",), "e2e": ("limit_publish", "limit_consume"),
            "ingest": ("limit_publish",)}
"""Which bare loop bounds a stage (the slower one, when two); workers: the bare relay."""


_MIN_WIDTH = 150


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: met when the median run meets it."""

    name: str
    goal: float
    unit: str
    median: float | None
    best: float | None
    at_most: bool = False

    def _meets(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.goal if self.at_most else value >= self.goal

    @property
    def met(self) -> str:
        if self._meets(self.median):
            return "met"
        return "best run only" if self._meets(self.best) else "not met"

    def as_json(self) -> dict[str, Any]:
        digits = 3 if self.unit == "x" else 1
        return {"name": self.name, "goal": self.goal, "unit": self.unit,
                "median": rounded(self.median, digits), "best": rounded(self.best, digits),
                "met": self.met}


def _limits(stages: dict[str, StageResult], key: str) -> tuple[StageResult, ...]:
    names = ("limit_relay",) if key.startswith("worker_") else LIMIT_OF.get(key, ())
    return tuple(stages[n] for n in names if n in stages)


def ratio(stages: dict[str, StageResult], key: str, which: str) -> float | None:
    """``which`` ('median' or 'best') rate of stage ``key`` over the median of its limit
    (the slower one, when two bound it)."""
    limits = _limits(stages, key)
    value: float | None = getattr(stages[key], which) if key in stages else None
    bounds: list[float | None] = [limit.median for limit in limits]
    known = [b for b in bounds if b is not None and b > 0]
    if value is None or not bounds or len(known) < len(bounds):
        return None
    return value / min(known)


def peak(stages: dict[str, StageResult], name: str) -> float | None:
    values: list[float] = [p for s in stages.values() if (p := s.peak(name)) is not None]
    return max(values) if values else None


RATE_TARGETS = (("worker_1", "worker stage, 1 process", 7000, "msg/s"),
                 ("e2e", "end to end", 3000, "msg/s"),
                 ("ingest", "receiver ingest", 20000, "receipts/s"),
                 ("publish", "publish with confirms", 10000, "msg/s"))
P99_TARGET_MS = 100.0
_LATENCY_TARGETS = (("latency", "service p99 publish → submitted"),
                    ("latency_backlog", "service p99 while the backlog drains"))


def targets(stages: dict[str, StageResult]) -> list[Target]:
    """The issue's targets that this run measured."""
    found = [Target(name, goal, unit, stages[key].median, stages[key].best)
             for key, name, goal, unit in RATE_TARGETS if key in stages]
    if "worker_1" in stages and "limit_relay" in stages:
        found.insert(1, Target("worker stage, 1 process / bare relay", 0.7, "x",
                               ratio(stages, "worker_1", "median"),
                               ratio(stages, "worker_1", "best")))
    found += [Target(name, P99_TARGET_MS, "ms", stages[key].median, stages[key].best, at_most=True)
              for key, name in _LATENCY_TARGETS if key in stages]
    worker_rss = peak(stages, "worker_peak_rss_mb")
    if worker_rss is not None:
        found.append(Target("worker peak RSS", 150, "MiB", worker_rss, worker_rss, at_most=True))
    return found


def _cpu_us(stage: StageResult | None, role: str) -> float | None:
    sample = stage.median_sample() if stage is not None else None
    value = sample.extra.get("cpu_us_per_msg", {}).get(role) if sample is not None else None
    return float(value) if value else None


def worker_per_relay(stages: dict[str, StageResult]) -> dict[str, float | None]:
    """The worker stage x1 against the bare relay of the same run (medians): by rate, and
    by CPU per message (relay µs over worker µs: robust on a shared machine)."""
    worker, relay = _cpu_us(stages.get("worker_1"), "worker"), \
        _cpu_us(stages.get("limit_relay"), "relay")
    return {"rate": rounded(ratio(stages, "worker_1", "median"), 3),
            "cpu": rounded(relay / worker, 3) if relay and worker else None,
            "worker_cpu_us": worker, "relay_cpu_us": relay}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def report_json(report: BenchReport) -> dict[str, Any]:
    stages = report.stages
    return {
        "machine": report.machine,
        "broker": report.broker,
        "options": {k: _plain(v) for k, v in asdict(report.options).items()
                    if k != "broker_url"},
        "stages": {key: result.as_json() for key, result in stages.items()},
        "ratio_to_limit": {
            key: {"median": rounded(ratio(stages, key, "median"), 3),
                  "best": rounded(ratio(stages, key, "best"), 3)}
            for key in stages if _limits(stages, key)
        },
        "worker_per_relay": worker_per_relay(stages),
        "memory_mib": {"worker_peak_rss": rounded(peak(stages, "worker_peak_rss_mb")),
                       "receiver_peak_rss": rounded(peak(stages, "receiver_peak_rss_mb"))},
        "targets": [t.as_json() for t in targets(stages)],
        "profiles": {role: _profile(path) for role, path in report.profiles.items()},
        "accounted_for_every_message": bool(stages) and all(
            s.complete for s in stages.values()),
    }


def _profile(path: str) -> dict[str, Any]:
    try:
        with Path(path).open() as lines:
            return {"path": path, **summarize(lines).as_json()}
    except OSError as exc:
        return {"path": path, "error": str(exc)}


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.2f}" if unit == "x" else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def _detail(result: StageResult) -> str:
    sample = result.median_sample()
    if sample is None:
        errors = [s.error for s in result.samples if s.error]
        return f"[red]{errors[0] if errors else 'no complete run'}[/red]"
    if result.latency:
        return " · ".join(f"{k} {v:,.0f}" for k, v in sample.latency_ms.items()) + " ms"
    accounted = sum(s.accounted for s in result.samples)
    counted = sum(s.count for s in result.samples)
    return f"{accounted:,}/{counted:,} accounted"


_CPU_ORDER = ("worker", "relay", "receiver", "bench", "broker", "sandbox")


def _cpu(result: StageResult) -> str:
    """CPU microseconds per message of each process, in the median run."""
    sample = result.median_sample()
    cpu = {} if sample is None else (sample.extra.get("cpu_us_per_msg")
                                     or sample.extra.get("cpu_us_per_receipt") or {})
    return " · ".join(f"{role} {cpu[role]:,.0f}" for role in _CPU_ORDER
                      if cpu.get(role, 0) >= 1) or "-"


def _stage_table(report: BenchReport, data: dict[str, Any]) -> Table:
    options = report.options
    table = Table(title=f"ics-sms bench: {options.runs} run(s) per stage, "
                        f"{options.queue_type.value} queues, prefetch {options.prefetch}, "
                        f"batch {options.batch_max}")
    for name, justify in (("stage", "left"), ("unit", "left"), ("best", "right"),
                          ("median", "right"), ("vs limit", "right"), ("median run", "left"),
                          ("CPU µs/msg, median run", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for key, result in report.stages.items():
        ratio_text = "-"
        if key in data["ratio_to_limit"] and data["ratio_to_limit"][key]["median"] is not None:
            ratio_text = f"{data['ratio_to_limit'][key]['median']:.2f}"
        unit = "p99 ms" if result.latency else result.unit
        table.add_row(result.title, unit, _number(result.best), _number(result.median),
                      ratio_text, _detail(result), _cpu(result))
    return table


def _target_table(data: dict[str, Any]) -> Table:
    table = Table(title="targets (met: the median run meets it)")
    for name in ("target", "goal", "median", "best", "met"):
        table.add_column(name, justify="left" if name in ("target", "met") else "right")
    colours = {"met": "green", "best run only": "yellow", "not met": "red"}
    for t in data["targets"]:
        sign = "≤" if t["unit"] in ("ms", "MiB") else "≥"
        table.add_row(t["name"], f"{sign} {_number(t['goal'], t['unit'])}",
                      _number(t["median"], t["unit"]), _number(t["best"], t["unit"]),
                      f"[{colours[t['met']]}]{t['met']}[/]")
    return table


def print_report(report: BenchReport, data: dict[str, Any]) -> None:
    console = Console(highlight=False)
    console.width = max(console.width, _MIN_WIDTH)
    machine = report.machine
    console.print(
        f"machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['ram_gib']} GiB, "
        f"Python {machine['python']}; RabbitMQ {report.broker['version']} at "
        f"{report.broker['url']}; load average {machine['load_average_start'][0]} → "
        f"{machine['load_average_end'][0]}")
    console.print(_stage_table(report, data))
    memory = data["memory_mib"]
    console.print(f"peak RSS: worker {_number(memory['worker_peak_rss'], 'MiB')}, "
                  f"receiver {_number(memory['receiver_peak_rss'], 'MiB')}")
    relay = data["worker_per_relay"]
    if relay["rate"] is not None or relay["cpu"] is not None:
        console.print(f"worker x1 / bare relay: {_number(relay['rate'], 'x')} by rate, "
                      f"{_number(relay['cpu'], 'x')} by CPU per message (relay "
                      f"{_number(relay['relay_cpu_us'], 'µs')}, worker "
                      f"{_number(relay['worker_cpu_us'], 'µs')})")
    if data["targets"]:
        console.print(_target_table(data))
    for role, path in report.profiles.items():
        console.print(f"\npy-spy profile of the {role} ({path}):")
        try:
            with Path(path).open() as lines:
                console.print(format_summary(summarize(lines), top=10), markup=False)
        except OSError as exc:
            console.print(f"unreadable: {exc}", markup=False)
