"""``ics-sms``: one console script, one sub-command module per concern."""

from __future__ import annotations

from ics_sms.cli.main import main

__all__ = ["main"]
