"""LiveSenders: edits seen while running, broken edits survived, removed senders
remembered, tokens resolved per sender.

Reloads are awaited by polling what a caller would see, with a generous deadline that
only guards against a hang: nothing here asserts how fast a change is seen.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from ics_sms.schemas.redact import SECRETS
from ics_sms.schemas.senders import Sender, Senders, SenderType, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.stores.live import (
    NO_SENDERS_LOG_S,
    LiveSenders,
    StaticSenders,
    as_view,
    describe_change,
)
from ics_sms.stores.senders import SenderSourceError, Snapshot
from ics_sms.stores.senders_file import FileSenderSource

DEADLINE_S = 30.0
CHANGED = "senders changed"
UNUSABLE = "senders configuration cannot be used, keeping the last good one"
USABLE_AGAIN = "senders configuration usable again"


def sender(name: str, **fields: Any) -> Sender:
    if not {"token", "token_env", "token_file"} & set(fields):
        fields["token"] = f"not-a-real-ics-token-{name}"
    fields.setdefault("tracking_token", f"tracking-token-of-{name}")
    return Sender(name=name, type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                  username=name, **fields)


def config(*senders: Sender) -> Senders:
    result = Senders()
    for one in senders:
        result = result.add(one)
    return result


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until true; fail (never hang) after a generous deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not seen within {DEADLINE_S:g}s: {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(live: LiveSenders) -> AsyncIterator[LiveSenders]:
    stop = asyncio.Event()
    task = asyncio.create_task(live.run(stop))
    try:
        yield live
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)


def edit(path: Path, content: bytes | None) -> bytes:
    """Write ``content`` in place (None: leave it); the content before."""
    before = path.read_bytes()
    if content is not None:
        path.write_bytes(content)
    return before


def events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == event]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "senders.toml"


@pytest.fixture
def settings(path: Path) -> Settings:
    return Settings(senders_file=path, senders_reload_s=0.1)


def open_live(settings: Settings, **kwargs: Any) -> LiveSenders:
    return LiveSenders.open(FileSenderSource(settings.senders_file), settings, **kwargs)


class TestFileSource:
    async def test_an_edit_while_running_is_taken_into_use_and_told(
        self, path: Path, settings: Settings
    ) -> None:
        save_senders(path, config(sender("alpha")))
        live = open_live(settings)
        told: list[tuple[Senders, Senders]] = []
        live.subscribe(lambda old, new: told.append((old, new)))
        reloads = sample("ics_sms_senders_reloads_total") or 0
        with capture_logs() as logs:
            async with running(live):
                first = live.version
                save_senders(path, config(sender("alpha"), sender("beta")).with_default("beta"))
                await eventually(lambda: "beta" in live.current.senders, "beta added")
        assert live.version != first
        assert live.current.default == "beta"
        [(old, new)] = told
        assert (sorted(old.senders), sorted(new.senders)) == (["alpha"], ["alpha", "beta"])
        [line] = events(logs, CHANGED)
        assert line["added"] == ["beta"]
        assert line["default"] == "alpha -> beta"
        assert "not-a-real-ics-token" not in str(logs)
        assert sample("ics_sms_senders_reloads_total") == reloads + 1
        assert sample("ics_sms_senders_configured") == 2

    async def test_a_broken_edit_keeps_the_last_good_configuration_until_fixed(
        self, path: Path, settings: Settings
    ) -> None:
        save_senders(path, config(sender("alpha")))
        live = open_live(settings)
        good = live.current
        failures = sample("ics_sms_senders_reload_failures_total") or 0
        with capture_logs() as logs:
            async with running(live):
                edit(path, b"default = 'alpha'\n[senders.alpha\n")
                # several failed polls of the same broken file: one error line
                await eventually(
                    lambda: (sample("ics_sms_senders_reload_failures_total") or 0)
                    >= failures + 3, "three failed loads")
                assert sample("ics_sms_senders_config_ok") == 0
                assert not live.healthy
                assert live.current is good
                assert len(events(logs, UNUSABLE)) == 1

                edit(path, b"default = 'alpha'\n[senders.alpha]\ntype = 'nope'\n")
                await eventually(lambda: len(events(logs, UNUSABLE)) == 2,
                                 "a different breakage logged")

                save_senders(path, config(sender("alpha"), sender("gamma")))
                await eventually(lambda: "gamma" in live.current.senders, "the fix")
        first, second = events(logs, UNUSABLE)
        assert str(path) in first["reason"] and "TOML" in first["reason"]
        assert "senders.alpha" in second["reason"]
        assert first["log_level"] == "error"
        assert len(events(logs, USABLE_AGAIN)) == 1
        assert sample("ics_sms_senders_config_ok") == 1
        assert live.healthy

    async def test_a_fix_back_to_the_same_content_recovers_without_a_change(
        self, path: Path, settings: Settings
    ) -> None:
        save_senders(path, config(sender("alpha")))
        live = open_live(settings)
        told: list[object] = []
        live.subscribe(lambda old, new: told.append(new))
        original = edit(path, None)
        with capture_logs() as logs:
            async with running(live):
                edit(path, b"not toml [")
                await eventually(lambda: not live.healthy, "the breakage")
                edit(path, original)
                await eventually(lambda: live.healthy, "the recovery")
        assert told == []
        assert len(events(logs, USABLE_AGAIN)) == 1

    async def test_a_configmap_symlink_swap_is_seen(self, tmp_path: Path) -> None:
        # Kubernetes: senders.toml -> ..data/senders.toml, ..data -> ..<timestamp>
        mount = tmp_path / "config"
        (mount / "..2026_12_01_10_00_00.1").mkdir(parents=True)
        save_senders(mount / "..2026_12_01_10_00_00.1" / "senders.toml",
                     config(sender("alpha")))
        os.symlink("..2026_12_01_10_00_00.1", mount / "..data")
        os.symlink("..data/senders.toml", mount / "senders.toml")
        settings = Settings(senders_file=mount / "senders.toml", senders_reload_s=0.1)
        live = open_live(settings)
        assert list(live.current.senders) == ["alpha"]
        async with running(live):
            (mount / "..2026_12_01_11_00_00.2").mkdir()
            save_senders(mount / "..2026_12_01_11_00_00.2" / "senders.toml",
                         config(sender("alpha"), sender("beta")))
            os.symlink("..2026_12_01_11_00_00.2", mount / "..data_tmp")
            os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap
            for old in (mount / "..2026_12_01_10_00_00.1").iterdir():
                old.unlink()
            (mount / "..2026_12_01_10_00_00.1").rmdir()
            await eventually(lambda: "beta" in live.current.senders, "the swapped config")

    async def test_a_removed_sender_is_remembered_for_its_grace_period(
        self, path: Path, settings: Settings
    ) -> None:
        beta = sender("beta")
        save_senders(path, config(sender("alpha"), beta))
        live = open_live(settings)
        with capture_logs() as logs:
            async with running(live):
                # the file does not record removals: LiveSenders does
                save_senders(path, config(sender("alpha"), beta).remove("beta"))
                await eventually(lambda: "beta" not in live.current.senders, "beta removed")
        now = datetime.now(UTC)
        retired = live.current.retired_by_tracking_token(beta.tracking_token, now,
                                                         settings.senders_grace_s)
        assert retired is not None and retired.name == "beta"
        [line] = events(logs, CHANGED)
        assert line["removed"] == ["beta"]
        assert line["receipts_still_accepted_for"] == ["beta"]
        assert beta.tracking_token not in str(logs)

    def test_an_unreadable_source_at_start_is_an_error(self, path: Path,
                                                       settings: Settings) -> None:
        path.write_text("[senders.alpha]\ntype = 'nope'\n")
        with pytest.raises(SenderSourceError, match=r"senders\.alpha"):
            open_live(settings)

    def test_no_senders_is_a_warning_not_an_error(self, settings: Settings) -> None:
        with capture_logs() as logs:
            live = open_live(settings)  # the file does not exist
        assert len(live.current) == 0
        [line] = events(logs, "no senders configured")
        assert line["log_level"] == "warning"
        assert str(settings.senders_file) in line["source"]
        assert sample("ics_sms_senders_configured") == 0

    async def test_no_senders_is_repeated_while_it_lasts(self, settings: Settings) -> None:
        clock = Clock()
        with capture_logs() as logs:
            live = LiveSenders(FileSenderSource(settings.senders_file),
                               Snapshot(Senders(), "missing"), reload_s=0.05, grace_s=0,
                               clock=lambda: clock.mono)
            async with running(live):
                await eventually(lambda: no_senders_lines(logs) == 1, "the warning at start")
                clock.advance(NO_SENDERS_LOG_S)
                await eventually(lambda: no_senders_lines(logs) == 2, "the warning repeated")


def no_senders_lines(logs: list[dict[str, Any]]) -> int:
    return len(events(logs, "no senders configured"))


# -- swaps, without a source ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def live_of(senders: Senders, clock: Clock, *, grace_s: float = 3600.0,
            check_tokens: bool = True) -> LiveSenders:
    return LiveSenders(FileSenderSource(Path("/nonexistent/senders.toml")),
                       Snapshot(senders, "v1"), reload_s=10.0, grace_s=grace_s,
                       check_tokens=check_tokens, clock=lambda: clock.mono,
                       now=lambda: clock.wall)


class TestSwap:
    def test_removals_and_replaced_tracking_tokens_retire_until_the_grace_ends(self) -> None:
        clock = Clock()
        alpha, beta = sender("alpha"), sender("beta")
        live = live_of(config(alpha, beta), clock)
        rotated = alpha.model_copy(update={"tracking_token": "a-brand-new-tracking-token"})
        assert live.swap(Snapshot(config(rotated), "v2"))
        assert {(r.name, r.tracking_token) for r in live.current.retired} == {
            ("alpha", alpha.tracking_token), ("beta", beta.tracking_token)}
        assert all(r.removed_at == clock.wall for r in live.current.retired)

        clock.advance(3601)
        assert live.swap(Snapshot(config(rotated, sender("gamma")), "v3"))
        assert live.current.retired == ()

    def test_a_removal_the_source_recorded_is_not_doubled(self) -> None:
        clock = Clock()
        both = config(sender("alpha"), sender("beta"))
        live = live_of(both, clock)
        live.swap(Snapshot(both.remove("beta", now=clock.wall), "v2"))
        assert [r.name for r in live.current.retired] == ["beta"]

    def test_a_sender_back_with_its_url_is_no_longer_retired(self) -> None:
        clock = Clock()
        alpha, beta = sender("alpha"), sender("beta")
        live = live_of(config(alpha, beta), clock)
        live.swap(Snapshot(config(alpha), "v2"))
        live.swap(Snapshot(config(alpha, beta), "v3"))
        assert live.current.retired == ()

    def test_a_new_version_with_the_same_content_is_no_change(self) -> None:
        clock = Clock()
        live = live_of(config(sender("alpha")), clock)
        told: list[object] = []
        live.subscribe(lambda old, new: told.append(new))
        assert not live.swap(Snapshot(config(sender("alpha")), "v2"))
        assert live.version == "v2"
        assert told == []

    def test_a_failing_listener_does_not_keep_the_change_from_the_others(self) -> None:
        clock = Clock()
        live = live_of(config(sender("alpha")), clock)
        told: list[str] = []

        def broken(_old: Senders, _new: Senders) -> None:
            raise RuntimeError("listener bug")

        live.subscribe(broken)
        unsubscribe = live.subscribe(lambda old, new: told.append("second"))
        with capture_logs() as logs:
            live.swap(Snapshot(config(sender("alpha"), sender("beta")), "v2"))
        assert told == ["second"]
        assert len(events(logs, "senders change listener failed")) == 1
        unsubscribe()
        live.swap(Snapshot(config(sender("alpha")), "v3"))
        assert told == ["second"]

    def test_the_change_names_fields_never_values(self) -> None:
        old = config(sender("alpha"), sender("beta"))
        new = config(sender("alpha", rate_per_s=5), sender("gamma")).with_default("gamma")
        change = describe_change(old, new.replace(
            new.named("alpha").model_copy(update={"token": None, "token_env": "ALPHA_TOKEN"})))
        assert change == {"added": ["gamma"], "removed": ["beta"],
                          "changed": {"alpha": ["token", "token_env", "rate_per_s"]},
                          "default": "alpha -> gamma"}

    def test_fixed_senders_are_a_view_too(self) -> None:
        fixed = config(sender("alpha"))
        assert as_view(fixed) == StaticSenders(fixed)
        live = live_of(fixed, Clock())
        assert as_view(live) is live


class TestTokens:
    def test_a_missing_token_makes_one_sender_unusable_until_it_appears(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("LIVE_TEST_BETA_TOKEN", raising=False)
        clock = Clock()
        alpha, beta = sender("alpha"), sender("beta", token_env="LIVE_TEST_BETA_TOKEN")
        with capture_logs() as logs:
            live = live_of(config(alpha, beta), clock)
            for _ in range(3):
                assert live.token(beta) is None
                assert live.unusable("beta") is not None
            live.swap(Snapshot(config(alpha, beta, sender("gamma")), "v2"))  # still missing
        reason = live.unusable("beta")
        assert reason is not None and "LIVE_TEST_BETA_TOKEN" in reason
        [line] = events(logs, "sender cannot send: its ICS token cannot be read")
        assert line["sender"] == "beta"
        assert sample("ics_sms_sender_token_ok", sender="beta") == 0
        assert live.token(alpha) == alpha.token
        assert live.unusable("alpha") is None
        assert sample("ics_sms_sender_token_ok", sender="alpha") == 1

        monkeypatch.setenv("LIVE_TEST_BETA_TOKEN", "beta-secret-ics-token")
        assert live.token(beta) is None  # cached until the reload interval passed
        clock.advance(live.reload_s)
        with capture_logs() as logs:
            token = live.token(beta)
        assert token is not None and token.get_secret_value() == "beta-secret-ics-token"
        assert live.unusable("beta") is None
        assert len(events(logs, "sender can send again: its ICS token can be read")) == 1
        assert sample("ics_sms_sender_token_ok", sender="beta") == 1
        assert "beta-secret-ics-token" not in SECRETS("token beta-secret-ics-token")

    def test_a_token_file_rotated_in_place_is_read_again(self, tmp_path: Path) -> None:
        token_file = tmp_path / "beta.token"
        token_file.write_text("first-ics-token\n")
        clock = Clock()
        beta = sender("beta", token_file=token_file)
        live = live_of(config(beta), clock)
        first = live.token(beta)
        assert first is not None and first.get_secret_value() == "first-ics-token"
        token_file.write_text("second-ics-token\n")
        clock.advance(live.reload_s)
        second = live.token(beta)
        assert second is not None and second.get_secret_value() == "second-ics-token"

    def test_a_removed_sender_leaves_no_gauge(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("LIVE_TEST_DELTA_TOKEN", raising=False)
        clock = Clock()
        alpha, delta = sender("alpha"), sender("delta", token_env="LIVE_TEST_DELTA_TOKEN")
        live = live_of(config(alpha, delta), clock)
        assert sample("ics_sms_sender_token_ok", sender="delta") == 0
        live.swap(Snapshot(config(alpha), "v2"))
        assert sample("ics_sms_sender_token_ok", sender="delta") is None
        assert live.unusable("delta") is None

    def test_the_receiver_does_not_check_tokens(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("LIVE_TEST_EPSILON_TOKEN", raising=False)
        with capture_logs() as logs:
            live_of(config(sender("epsilon", token_env="LIVE_TEST_EPSILON_TOKEN")), Clock(),
                    check_tokens=False)
        assert logs == []
