"""The figures of the fault suite: one row per scenario run, a table, and a JSON file.

Every scenario records its row *before* it asserts, so a failing scenario still shows its
figures. At the end of the session (``pytest_terminal_summary`` in ``conftest.py``) the
rows are printed as a table and merged into a JSON file (``chaos-results.json`` at the
repository root, or ``$ICS_SMS_CHAOS_RESULTS``): one entry per profile and scenario, each
with its time and git commit, so runs can be compared over time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "RESULTS_ENV", "Row", "format_table", "record", "results_path",
           "write_results"]

RESULTS_ENV = "ICS_SMS_CHAOS_RESULTS"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1


@dataclass
class Row:
    """What one scenario run measured. ``None`` means "not applicable to this scenario"."""

    scenario: str
    profile: str
    messages: int
    lost: int | None = None
    duplicate_sends: int | None = None
    duplicate_events: int | None = None
    duplicate_sms: int | None = None
    """Acceptances by ICS beyond the first of a message_id (per the sandbox's count)."""
    several_finals: int | None = None
    """Messages with more than one final event (distinct event ids)."""
    recovery_s: float | None = None
    duration_s: float | None = None
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


RESULTS: list[Row] = []


def record(row: Row) -> Row:
    RESULTS.append(row)
    return row


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: list[Row]) -> list[str]:
    header = ("scenario", "profile", "messages", "lost", "dup sends", "dup events",
              "dup SMS", ">1 finals", "recovery s", "duration s", "result")
    body = [(r.scenario, r.profile, _cell(r.messages), _cell(r.lost), _cell(r.duplicate_sends),
             _cell(r.duplicate_events), _cell(r.duplicate_sms), _cell(r.several_finals),
             _cell(r.recovery_s), _cell(r.duration_s),
             "pass" if r.passed else f"FAIL ({len(r.problems)})") for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    for row in rows:
        for problem in row.problems:
            out.append(f"  {row.scenario} [{row.profile}]: {problem}")
    return out


def results_path() -> Path:
    configured = os.environ.get(RESULTS_ENV)
    return Path(configured) if configured else REPO_ROOT / "chaos-results.json"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _environment() -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "host_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write_results(rows: list[Row], path: Path | None = None) -> Path:
    """Merge ``rows`` into the JSON file: ``{"schema": 1, "<profile>": {"<scenario>": {...}}}``.

    Rows of scenarios not run this time stay as they were (with their own time and commit).
    """
    target = path or results_path()
    document: dict[str, Any] = {"schema": SCHEMA_VERSION}
    with contextlib.suppress(OSError, ValueError):
        existing = json.loads(target.read_text())
        if isinstance(existing, dict) and existing.get("schema") == SCHEMA_VERSION:
            document = existing
    stamp = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **_environment()}
    for row in rows:
        document.setdefault(row.profile, {})[row.scenario] = {**row.as_json(), **stamp}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, target)
    return target
