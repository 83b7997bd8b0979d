"""Where the time goes: py-spy's raw (collapsed) stacks summed by function and library.

``python -m ics_sms.bench.profile worker.raw`` prints the summary of one recording.
Samples are CPU samples (py-spy leaves idle threads out): *own* time is where the
interpreter was, *inclusive* time what ran under a function. A sample is also charged to
the deepest of our own functions on its stack, split by the library it was in, which says
which of our calls to change.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProfileSummary", "format_summary", "library_of", "summarize"]

OUR_PACKAGES = frozenset({"schemas", "producers", "workers", "callbacks", "broker", "stores",
                          "ics_sms"})
_WRAPPERS = ("ics_sms/cli/", "ics_sms/__main__")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _split_frame(frame: str) -> tuple[str, str]:
    """``'Handle._run (asyncio/events.py:80)'`` -> ``('Handle._run', 'asyncio/events.py')``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["name"], match["file"]


def library_of(path: str) -> str:
    """``ours:workers``, ``stdlib:asyncio``, a third-party distribution, or ``other``."""
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    top = path.split("/", 1)[0].removesuffix(".py")
    if not top or top.startswith("<"):
        return "other"
    if top in OUR_PACKAGES:
        return f"ours:{top}"
    if top in sys.stdlib_module_names:
        return f"stdlib:{top}"
    return top


@dataclass(slots=True)
class ProfileSummary:
    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    own_by_library: Counter[str] = field(default_factory=Counter)
    by_our_caller: Counter[tuple[str, str]] = field(default_factory=Counter)

    def share(self, count: int) -> float:
        return 100.0 * count / self.samples if self.samples else 0.0

    def as_json(self, top: int = 20) -> dict[str, Any]:
        def rows(counter: Counter[Any]) -> list[dict[str, Any]]:
            return [{"name": " / ".join(k) if isinstance(k, tuple) else k,
                     "percent": round(self.share(n), 1)} for k, n in counter.most_common(top)]

        return {"samples": self.samples, "own": rows(self.own),
                "inclusive_ours": rows(self._ours_inclusive()),
                "own_by_library": rows(self.own_by_library),
                "by_our_caller": rows(self.by_our_caller)}

    def _ours_inclusive(self) -> Counter[str]:
        return Counter({k: n for k, n in self.inclusive.items() if _ours(_path_of(k))})


def _ours(path: str) -> bool:
    """One of our modules, other than the command-line wrapper around every service."""
    return library_of(path).startswith("ours:") and not path.startswith(_WRAPPERS)


def _path_of(label: str) -> str:
    return label.rsplit(" (", 1)[-1].rstrip(")")


def _label(name: str, path: str) -> str:
    return f"{name} ({path})"


def _add_stack(summary: ProfileSummary, frames: list[tuple[str, str]], count: int) -> None:
    summary.samples += count
    leaf_name, leaf_file = frames[-1]
    leaf_library = library_of(leaf_file)
    summary.own[_label(leaf_name, leaf_file)] += count
    summary.own_by_library[leaf_library] += count
    for label in {_label(name, path) for name, path in frames}:
        summary.inclusive[label] += count
    ours = [f for f in frames if _ours(f[1])]
    caller = _label(*ours[-1]) if ours else "(not under our code)"
    summary.by_our_caller[(caller, leaf_library)] += count


def summarize(lines: Iterable[str]) -> ProfileSummary:
    """Sum py-spy ``--format raw`` lines (``frame;frame;... count``)."""
    summary = ProfileSummary()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_split_frame(f) for f in stack.split(";") if f]
        if frames:
            _add_stack(summary, frames, int(count))
    return summary


def format_summary(summary: ProfileSummary, top: int = 15) -> str:
    """A plain-text report: own, inclusive (ours), own by library, by our caller."""
    out = [f"{summary.samples} samples"]

    def section(title: str, counter: Counter[Any]) -> None:
        out.append(f"\n{title}")
        for key, count in counter.most_common(top):
            name = " <- ".join(reversed(key)) if isinstance(key, tuple) else key
            out.append(f"  {summary.share(count):5.1f}%  {name}")

    section("own time, by function", summary.own)
    section("inclusive time, our functions", summary._ours_inclusive())
    section("own time, by library", summary.own_by_library)
    section("own time by library, under the deepest of our functions", summary.by_our_caller)
    return "\n".join(out)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"== {name}")  # noqa: T201  (a command-line report)
        with Path(name).open() as handle:
            print(format_summary(summarize(handle)))  # noqa: T201
