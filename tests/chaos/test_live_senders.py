"""Issue 14, "senders change while everything runs", end to end on real processes.

Two workers, the receiver and the ICS sandbox run against RabbitMQ and Redis, with one
sender A (``chaos-otp``, the default; ``chaos-offers`` is there too, untouched). A campaign
to A runs in the background the whole time. Meanwhile the operator changes the senders
with ``ics-sms senders`` (a separate process, the same environment), and every running
process follows within ``ICS_SMS_SENDERS_RELOAD_S`` (1 s here), without a restart:

1. ``add`` sender B; once every worker and the receiver took it into use, a campaign to B
   is published: every message is delivered (or fails as its number says) with its
   receipt posted to B's tracking URL (the receiver names the sender by that URL);
2. ``default B``: messages naming no sender now go out as B;
3. ``set B --token-stdin`` rotates B's ICS token, and the sandbox (ICS) is switched to the
   new token: the old one is refused from then on (checked with a request of its own), so
   a worker still sending with it would show up as a 401. B's next campaign is delivered,
   with no 401;
4. with the sandbox holding back its receipts, a last campaign to B is submitted, then
   ``remove B --new-default A``; once the processes took that in, the receipts are
   released: they arrive on the removed sender's tracking URL and are still accepted
   (the sandbox counts no receipt refused or given up), every message ends with B named.
   Messages naming no sender go out as A again.

At the end: no message lost, one final event per message, no SMS accepted twice by ICS
(the sandbox's count per smsgid), the same worker and receiver processes (PIDs) as at
the start, no token in any event or log line. All of it twice: senders in the TOML file
(``ICS_SMS_SENDERS_FILE``), and in the PostgreSQL registry (``ICS_SMS_SENDERS_URL``, inline
tokens encrypted with ``ICS_SMS_SENDERS_KEY``; the file is deleted once imported, so
nothing can read it instead).

The reload latency is a figure, never an assertion: for each change, from the moment the
source changed (the file's mtime; the registry row's ``updated_at``) to the log line of
each process taking that version into use (``senders changed``, its ``version``); and from
adding B to the first submission of a message to B.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import psycopg
import pytest
from cryptography.fernet import Fernet

from ics_sms.schemas.ics import DATASEND_PATH
from ics_sms.schemas.messages import SendRequest
from ics_sms.stores.registry import AUDIT_TABLE, CONFIG_TABLE, SENDERS_TABLE
from ics_sms.stores.senders_file import FileSenderSource
from tests.chaos.campaign import RECEIPTED_OUTCOMES, Campaign, CampaignPublisher, build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import (
    ENTITY_ID,
    FAST,
    FULL,
    REPO_ROOT,
    Service,
    Stack,
    http_request,
    profiles,
    wait_for,
)
from tests.chaos.ledger import Ledger
from tests.chaos.scenario import finish

A = "chaos-otp"
B = "chaos-live"
B_USER = "chaos-live"
RELOAD_S = 1
RELOAD_TIMEOUT_S = 60
SIZES: dict[str, dict[str, int]] = {
    FAST: {"per_step": 60, "background_per_s": 10, "step_timeout_s": 120},
    FULL: {"per_step": 5_000, "background_per_s": 100, "step_timeout_s": 600},
}
BACKGROUND_MAX_S = 600
"""The background campaign is built this long; it is halted once the steps are done."""


# -- the senders source, as the operator sees it ------------------------------------------------


class Source:
    """Where the scenario's senders live: the file or the registry (namespace of the stack)."""

    def __init__(self, kind: str, stack: Stack, postgres_url: str | None) -> None:
        self.kind = kind
        self.stack = stack
        self.postgres_url = postgres_url

    def __repr__(self) -> str:
        return f"<Source {self.kind} {self.stack.namespace}>"

    @classmethod
    def prepare(cls, kind: str, stack: Stack, request: pytest.FixtureRequest) -> Source:
        """The senders of ``stack.use_senders()`` in a source of that kind; with the
        registry, the services are pointed at it and the file is gone."""
        if kind == "file":
            return cls(kind, stack, None)
        url: str = request.getfixturevalue("postgres_url")
        source = cls(kind, stack, url)
        stack.env_overrides.update({"ICS_SMS_SENDERS_URL": url,
                                    "ICS_SMS_SENDERS_KEY": Fernet.generate_key().decode()})
        stack.cleanups.append(source.delete_rows)
        senders_cli(stack, "import", str(stack.senders_file))
        stack.senders_file.unlink()
        return source

    def delete_rows(self) -> None:
        assert self.postgres_url is not None
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            for table in (CONFIG_TABLE, SENDERS_TABLE, AUDIT_TABLE):
                conn.execute(f"DELETE FROM {table} WHERE namespace = %s",
                             [self.stack.namespace])

    def version(self) -> tuple[str, float]:
        """The version the services will log for the configuration now, and when (epoch
        seconds) the source last changed."""
        if self.postgres_url is None:
            path = self.stack.senders_file
            return FileSenderSource(path).load().version, path.stat().st_mtime
        with psycopg.connect(self.postgres_url) as conn:
            row = conn.execute(f"SELECT version, extract(epoch FROM updated_at) FROM "
                               f"{CONFIG_TABLE} WHERE namespace = %s",
                               [self.stack.namespace]).fetchone()
        assert row is not None, f"no configuration in the registry for {self.stack.namespace}"
        return str(row[0]), float(row[1])


def senders_cli(stack: Stack, *args: str, token: str | None = None) -> str:
    """``ics-sms senders ARGS`` as the operator runs it (a token only ever on stdin)."""
    done = subprocess.run([sys.executable, "-m", "ics_sms", "senders", *args],
                          env=stack.env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          input=None if token is None else token + "\n", timeout=120)
    assert done.returncode == 0, (f"ics-sms senders {args[0]} exited {done.returncode}:\n"
                                  f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


# -- following the processes -------------------------------------------------------------------


def taken_into_use(service: Service, version: str) -> float | None:
    """When (epoch seconds) ``service`` logged taking senders ``version`` into use."""
    for line in service.log_text().splitlines():
        if "senders changed" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (isinstance(entry, dict) and entry.get("event") == "senders changed"
                and entry.get("version") == version):
            return datetime.fromisoformat(entry["timestamp"]).timestamp()
    return None


def change(stack: Stack, source: Source, services: Sequence[Service], what: str, *args: str,
           token: str | None = None) -> dict[str, float]:
    """Run ``ics-sms senders ARGS`` and wait until every one of ``services`` took the new
    configuration into use; the reload latency of each (seconds)."""
    senders_cli(stack, *args, token=token)
    version, changed_at = source.version()

    def followed() -> bool:
        return all(taken_into_use(s, version) is not None for s in services)

    wait_for(followed, timeout_s=RELOAD_TIMEOUT_S, crashed=stack.crashed, poll_s=0.2,
             what=f"every worker and the receiver to follow '{what}' ({source.kind})")
    return {f"{s.role}-{s.pid}": round((taken_into_use(s, version) or 0.0) - changed_at, 3)
            for s in services}


def publish(stack: Stack, requests: Sequence[SendRequest], timeout_s: float) -> list[str]:
    """Publish ``requests`` (the producer library, in a thread); their ids, all confirmed.
    A sender the producer does not know goes to the service lane, B's lane."""
    publisher = CampaignPublisher(stack.rabbitmq_url, stack.topology, stack.senders,
                                  requests, chunk=100)
    publisher.start()
    publisher.join(timeout_s)
    assert not publisher.is_alive(), f"publishing did not finish within {timeout_s:g}s"
    assert not publisher.errors, publisher.errors
    confirmed = publisher.confirmed_ids()
    assert len(confirmed) == len(publisher.requests), "not every message was confirmed"
    return confirmed


def wait_finished(stack: Stack, ids: Sequence[str], what: str, timeout_s: float) -> float:
    assert stack.ledger is not None
    ledger = stack.ledger
    return wait_for(lambda: ledger.finished(ids) >= len(ids), timeout_s=timeout_s,
                    what=f"{what}: a final status for all {len(ids)}", crashed=stack.crashed,
                    poll_s=0.2)


def named_other_than(ledger: Ledger, ids: Sequence[str], sender: str, what: str) -> list[str]:
    """A problem when an event of one of ``ids`` names another sender than ``sender``."""
    wrong = {m: sorted(str(s) for s in named)
             for m, named in ledger.senders_of(ids).items() if named != {sender}}
    if not wrong:
        return []
    examples = ", ".join(f"{m}: {s}" for m, s in list(wrong.items())[:5])
    return [f"{what}: {len(wrong)} of {len(ids)} messages have events naming another sender "
            f"than {sender}, e.g. {examples}"]


def campaign(name: str, size: int, sender: str | None, seed: int) -> Campaign:
    """``size`` messages to ``sender`` (None: naming no sender, for the default), every
    one ending delivered or failed by its number (with a receipt either way)."""
    built = build_campaign(size, name, service=sender or A, promotional=None,
                           fixed=RECEIPTED_OUTCOMES, seed=seed)
    if sender is None:
        built.requests = [r.model_copy(update={"sender": None}) for r in built.requests]
    return built


# -- the scenario ------------------------------------------------------------------------------


@pytest.mark.parametrize("source_kind", ["file", "registry"])
@pytest.mark.parametrize("profile", profiles())
def test_senders_change_while_everything_runs(profile: str, source_kind: str,
                                              make_stack: MakeStack,
                                              request: pytest.FixtureRequest) -> None:
    size = SIZES[profile]
    step_timeout_s = float(size["step_timeout_s"])
    per_step = size["per_step"]
    stack = make_stack(f"live-{source_kind}")
    stack.use_senders()
    assert stack.senders.default == A
    stack.env_overrides["ICS_SMS_SENDERS_RELOAD_S"] = str(RELOAD_S)
    source = Source.prepare(source_kind, stack, request)
    old_token, new_token = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    watch = {**{f"ICS token of {name}": token for name, token in stack.tokens().items()},
             f"first ICS token of {B}": old_token, f"rotated ICS token of {B}": new_token}
    if "ICS_SMS_SENDERS_KEY" in stack.env_overrides:
        watch["registry key"] = stack.env_overrides["ICS_SMS_SENDERS_KEY"]
    ledger = stack.start_ledger(watch=watch)
    stack.start(workers=2, sandbox=["--account", f"{B_USER}:{old_token}"])
    sandbox = stack.sandbox
    assert sandbox is not None
    services = [s for s in stack.services if s.role in ("worker", "receiver")]
    pids = sorted((s.role, s.pid) for s in services)
    problems: list[str] = []
    reloads: dict[str, dict[str, float]] = {}
    everything = Campaign([], {})
    confirmed: list[str] = []
    started = time.monotonic()

    rate = size["background_per_s"]
    background_campaign = campaign(f"live-bg-{profile}", rate * BACKGROUND_MAX_S, A, seed=1)
    everything.extend(background_campaign)
    background = CampaignPublisher(stack.rabbitmq_url, stack.topology, stack.senders,
                                   background_campaign.requests, chunk=max(rate // 2, 1),
                                   rate_per_s=rate)
    background.start()

    def step(name: str, sender: str | None, seed: int,
             before_wait: Callable[[list[str]], None] | None = None,
             expect_named: str | None = None, count: int = per_step) -> list[str]:
        """Publish a campaign, (``before_wait``), wait for every final status, check the
        sender its events name."""
        part = campaign(f"live-{name}-{profile}", count, sender, seed)
        everything.extend(part)
        ids = publish(stack, part.requests, step_timeout_s)
        confirmed.extend(ids)
        if before_wait is not None:
            before_wait(ids)
        wait_finished(stack, ids, name, step_timeout_s)
        problems.extend(named_other_than(ledger, ids, expect_named or sender or A, name))
        return ids

    # 1. add B; publish to it once every process has it
    reloads["add"] = change(
        stack, source, services, f"add {B}", "add", B, "--type", "service_implicit",
        "--sender-id", "ACMELV", "--username", B_USER, "--token-stdin",
        "--dlt-entity-id", ENTITY_ID, "--rate-per-s", "100000", token=old_token)
    _, added_at = source.version()
    first_submission: dict[str, float] = {}

    def first_submitted(ids: list[str]) -> None:
        wait_for(lambda: ledger.progress(ids) > 0, timeout_s=step_timeout_s,
                 what=f"a first message to {B} submitted", crashed=stack.crashed, poll_s=0.02)
        first_submission["s"] = round(time.time() - added_at, 3)

    step("add", B, seed=2, before_wait=first_submitted)

    # 2. B becomes the default: messages naming no sender go out as B
    reloads["default"] = change(stack, source, services, f"default {B}", "default", B)
    step("default", None, seed=3, expect_named=B)

    # 3. B's token rotated; ICS refuses the old one from now on
    reloads["rotate"] = change(stack, source, services, f"rotate the token of {B}", "set", B,
                               "--token-stdin", token=new_token)
    sandbox.control(accounts={B_USER: new_token})
    datasend = sandbox.url + DATASEND_PATH
    old_answer = http_request(datasend, "POST", b"{}", {"Authorization": f"Bearer {old_token}"})
    new_answer = http_request(datasend, "POST", b"{}", {"Authorization": f"Bearer {new_token}"})
    assert old_answer[0] == 401, f"the sandbox still takes the old token: {old_answer}"
    assert new_answer[0] == 400, f"the sandbox refuses the new token: {new_answer}"
    refused_before = int(sandbox.stats()["responses"].get("401", 0))
    step("rotate", B, seed=4)
    refused = int(sandbox.stats()["responses"].get("401", 0)) - refused_before
    if refused:
        problems.append(f"ICS refused the credentials of {refused} requests after the token "
                        f"of {B} was rotated: a worker still sent the old token")

    # 4. B removed while ICS holds back the receipts of its last messages
    sandbox.control(receipts_paused=True)
    held: dict[str, int] = {}

    def remove_before_receipts(ids: list[str]) -> None:
        wait_for(lambda: ledger.progress(ids) >= len(ids), timeout_s=step_timeout_s,
                 what=f"every last message to {B} submitted", crashed=stack.crashed,
                 poll_s=0.2)
        held["receipts"] = int(sandbox.stats()["receipts_pending"])
        reloads["remove"] = change(stack, source, services, f"remove {B}", "remove", B,
                                   "--new-default", A)
        sandbox.control(receipts_paused=False)

    step("remove", B, seed=5, before_wait=remove_before_receipts)
    if held["receipts"] < per_step:
        problems.append(f"only {held['receipts']} receipts were held back when {B} was "
                        f"removed (expected at least {per_step})")
    step("default-again", None, seed=6, expect_named=A, count=max(per_step // 4, 1))

    # 5. the same processes all along
    still = sorted((s.role, s.pid) for s in stack.services
                   if s.role in ("worker", "receiver") and s.alive)
    if still != pids:
        problems.append(f"workers and receiver changed: {pids} at the start, {still} now")
    background.halt()
    background.join(step_timeout_s)
    problems.extend(background.errors)
    confirmed.extend(background.confirmed_ids())

    latencies = {change_: max(values.values()) for change_, values in reloads.items()}
    row = finish(stack, scenario=f"live senders: {source_kind}", profile=profile,
                 expected=everything.expected, confirmed=confirmed, started=started,
                 settle_timeout_s=step_timeout_s, problems=problems, duplicate_bound=0,
                 effectively_once=True,
                 figures={"source": source_kind, "reload_s_setting": RELOAD_S,
                          "reload_latency_s": latencies, "reload_latency_by_process_s": reloads,
                          "add_to_first_submission_s": first_submission.get("s"),
                          "receipts_held_at_removal": held.get("receipts"),
                          "background_messages": len(background.confirmed_ids()),
                          "messages_per_step": per_step})
    row.problems.extend(_secrets_seen(stack, ledger, watch))
    assert row.passed, "\n".join(row.problems)


def _secrets_seen(stack: Stack, ledger: Ledger, watch: dict[str, str]) -> list[str]:
    """Every token or key found in an event, a dead letter or a process's log."""
    with ledger._lock:
        found = list(ledger.secret_hits)
    for process, text in stack.logs().items():
        found += [f"{name} appears in the log of {process}"
                  for name, secret in watch.items() if secret in text]
    return found

