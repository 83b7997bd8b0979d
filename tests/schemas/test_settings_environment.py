"""Settings handed to a child process through the environment come back unchanged."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import QueueType


def test_to_environment_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = Settings(broker_url="amqp://u:p@h:5672/", namespace="ns.", callback_secret="s" * 32,
                        callback_secret_previous="old", senders_file=tmp_path / "s.toml",
                        promo_window_start=time(0), promo_window_end=time(0),
                        queue_type=QueueType.CLASSIC, linger_ms=7.5, metrics_port=0)
    for key, value in original.to_environment().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original
