"""Turn pydantic validation errors into lines a person can act on."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["describe"]


def describe(exc: ValidationError) -> list[str]:
    """One ``field: reason`` line per error, without pydantic's URLs and input echo."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "(message)"
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {reason}")
    return lines
