"""Turn pydantic validation errors into lines a person can act on."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["describe"]


def describe(exc: ValidationError) -> list[str]:
    """One ``field: reason`` line per error, without pydantic's URLs and input echo.

    An error of the whole model (a validator that compares fields) has no field: its reason
    names the fields itself.
    """
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {reason}" if where else reason)
    return lines
