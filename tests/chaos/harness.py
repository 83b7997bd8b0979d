"""Real processes for the fault suite: sandbox, receiver and workers, started as an operator
would (``python -m ics_sms ...`` with ``ICS_SMS_*`` in the environment), watched, measured
and always stopped.

A :class:`Stack` is one scenario's world: a namespace of its own on RabbitMQ, a senders
file with fresh tokens, a callback secret, the service processes (each writing stdout and
stderr to a log file of its own), optional fault proxies, and the :class:`Ledger` that
reads every event. Waiting is always on a condition with a deadline (:func:`wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from pika.exceptions import AMQPError
from pydantic import SecretStr
from redis.exceptions import RedisError

from ics_sms.schemas.senders import ClickTracking, Lane, Sender, Senders, SenderType, save_senders
from ics_sms.schemas.topology import Topology
from ics_sms.stores.redis import delete_prefix
from tests.chaos.campaign import Campaign, CampaignPublisher
from tests.chaos.ledger import Ledger
from tests.faults import ProxyThread, url_at

__all__ = [
    "FAST",
    "FULL",
    "BrokerProbe",
    "SandboxClient",
    "ScenarioFailed",
    "Service",
    "Stack",
    "free_port",
    "http_request",
    "poll_until",
    "profiles",
    "wait_for",
]

FAST = "fast"
FULL = "full"
ENTITY_ID = "1201159100000000000"
REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.1
_STOP_GRACE_S = 30.0


def profiles(*, full_timeout_s: float = 1800) -> list[Any]:
    """The two sizes of every scenario: ``fast`` runs in CI, ``full`` under ``-m chaos``."""
    return [pytest.param(FAST, id=FAST),
            pytest.param(FULL, id=FULL,
                         marks=[pytest.mark.chaos, pytest.mark.timeout(full_timeout_s)])]


class ScenarioFailed(AssertionError):
    """A scenario cannot go on: a deadline passed or a process died."""


def poll_until(check: Callable[[], bool], timeout_s: float, poll_s: float = _POLL_S) -> bool:
    """True once ``check()`` holds, False when ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str,
             crashed: Callable[[], str | None] | None = None, poll_s: float = _POLL_S) -> float:
    """Wait until ``check()`` holds; the seconds it took. Raises :class:`ScenarioFailed`
    when the deadline passes or ``crashed()`` names a process that died."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not check():
        problem = crashed() if crashed is not None else None
        if problem is not None:
            raise ScenarioFailed(f"while waiting for {what}: {problem}")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {timeout_s:g}s")
        time.sleep(poll_s)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_request(url: str, method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0,
                 ) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection: (status, body). Raises OSError when the
    server cannot be reached or drops the connection without an answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                            timeout=timeout_s)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"{method} {parts.path}: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


# -- processes ------------------------------------------------------------------------------


class Service:
    """One service process; stdout and stderr go to ``log_path``."""

    def __init__(self, role: str, argv: Sequence[str], env: dict[str, str],
                 log_path: Path) -> None:
        self.role = role
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(self.argv, env=env, cwd=REPO_ROOT,
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        self.expected_exit = False
        self.killed_at: float | None = None
        self._terminated = False

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.process.returncode}"
        return f"<Service {self.role} pid={self.pid} {state}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> float:
        """SIGKILL (kill -9) this process; the instant it was sent."""
        self.expected_exit = True
        self.killed_at = time.monotonic()
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(_STOP_GRACE_S)
        return self.killed_at

    def terminate(self) -> None:
        """Send SIGTERM once (a second SIGTERM may legitimately interrupt a graceful stop)."""
        self.expected_exit = True
        if self.alive and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = _STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit status (None: it had to be
        killed)."""
        if self.alive:
            self.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(_STOP_GRACE_S)
                self._close_log()
                return None
        self._close_log()
        return self.process.returncode

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()

    def rss_kb(self) -> int | None:
        """Resident memory now (VmRSS), in KiB; None when the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class SandboxClient:
    """The ICS sandbox's control and stats API."""

    def __init__(self, url: str, service: Service) -> None:
        self.url = url
        self.service = service

    def __repr__(self) -> str:
        return f"<SandboxClient {self.url}>"

    def stats(self) -> dict[str, Any]:
        status, body = http_request(self.url + "/_stats")
        assert status == 200, f"sandbox /_stats answered {status}"
        result: dict[str, Any] = json.loads(body)
        return result

    def accepted_by_smsgid(self) -> dict[str, int]:
        """How many times the sandbox accepted each smsgid (what ICS really sent)."""
        status, body = http_request(self.url + "/_stats?smsgids=1")
        assert status == 200, f"sandbox /_stats answered {status}"
        accepted: dict[str, int] = json.loads(body)["accepted_by_smsgid"]
        return accepted

    def control(self, **knobs: object) -> dict[str, Any]:
        status, body = http_request(self.url + "/_control", "POST", json.dumps(knobs).encode(),
                                    {"Content-Type": "application/json"})
        assert status == 200, f"sandbox /_control answered {status}: {body[:200]!r}"
        result: dict[str, Any] = json.loads(body)
        return result


class BrokerProbe:
    """Looks at queues from outside: ready counts and consumers (passive declare), and
    unacknowledged counts through ``rabbitmqctl`` when it is installed here."""

    def __init__(self, url: str) -> None:
        self._params = pika.URLParameters(url)
        self._params.client_properties = {"connection_name": "chaos probe"}
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self.rabbitmqctl = shutil.which("rabbitmqctl")

    def __repr__(self) -> str:
        return f"<BrokerProbe rabbitmqctl={bool(self.rabbitmqctl)}>"

    def _open(self) -> Any:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(self._params)
            self._channel = self._connection.channel()
        elif self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of ``queue``."""
        for attempt in range(3):
            try:
                frame = self._open().queue_declare(queue, passive=True)
                return int(frame.method.message_count), int(frame.method.consumer_count)
            except AMQPError:
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def queues(self, prefix: str, names: Iterable[str]) -> dict[str, tuple[int, int | None]]:
        """Every queue of the namespace: (ready, unacked or None when unknown)."""
        wanted = set(names)
        listed = self._rabbitmqctl(prefix)
        if listed is not None and wanted <= set(listed):
            return listed
        # no rabbitmqctl here, or it talks to another broker: ready counts only
        return {name: (self.counts(name)[0], None) for name in sorted(wanted)}

    def _rabbitmqctl(self, prefix: str) -> dict[str, tuple[int, int | None]] | None:
        if self.rabbitmqctl is None:
            return None
        try:
            out = subprocess.run(
                [self.rabbitmqctl, "list_queues", "-q", "--no-table-headers", "name",
                 "messages_ready", "messages_unacknowledged"],
                capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        found: dict[str, tuple[int, int | None]] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0].startswith(prefix):
                found[fields[0]] = (int(fields[1]), int(fields[2]))
        return found

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(AMQPError):
                connection.close()


# -- one scenario's world -------------------------------------------------------------------


class Stack:
    """Namespace, senders, secrets, processes, proxies and ledger of one scenario."""

    def __init__(self, name: str, folder: Path, rabbitmq_url: str, redis_url: str) -> None:
        self.name = name
        self.folder = folder
        self.rabbitmq_url = rabbitmq_url
        self.redis_url = redis_url
        self.namespace = f"chaos-{name}-{uuid.uuid4().hex[:6]}."
        self.topology = Topology(namespace=self.namespace)
        self.secret = secrets.token_urlsafe(24)
        self.senders_file = folder / "senders.toml"
        self.senders = Senders()
        self.receiver_port = free_port()
        self.sandbox_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.receiver_port}"
        self.ics_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.service_broker_url = rabbitmq_url
        self.env_overrides: dict[str, str] = {}
        self.services: list[Service] = []
        self.proxies: list[ProxyThread] = []
        self.ledger: Ledger | None = None
        self.sandbox: SandboxClient | None = None
        self.receiver: Service | None = None
        self.probe = BrokerProbe(rabbitmq_url)
        self.stop_statuses: dict[str, int | None] = {}
        self.cleanups: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Stack {self.namespace} services={self.services}>"

    # -- configuration ------------------------------------------------------------------
    def use_senders(self, *, rate_per_s: float = 100_000,
                    click_tracking: ClickTracking = ClickTracking.OFF,
                    extra: Sequence[Sender] = ()) -> Senders:
        """Two senders with fresh tokens (one per lane), plus ``extra``; saved to the file."""
        otp = Sender(name="chaos-otp", type=SenderType.SERVICE_IMPLICIT, sender_id="ACMEIN",
                     username="chaos-otp", token=SecretStr(secrets.token_urlsafe(18)),
                     dlt_entity_id=ENTITY_ID, rate_per_s=rate_per_s)
        offers = Sender(name="chaos-offers", type=SenderType.PROMOTIONAL, sender_id="512345",
                        username="chaos-offers", token=SecretStr(secrets.token_urlsafe(18)),
                        dlt_entity_id=ENTITY_ID, rate_per_s=rate_per_s,
                        click_tracking=click_tracking)
        senders = Senders().add(otp).add(offers)
        for sender in extra:
            senders = senders.add(sender)
        self.senders = senders
        save_senders(self.senders_file, senders)
        return senders

    def tokens(self) -> dict[str, str]:
        """Every secret token of the configured senders, by sender name."""
        return {s.name: s.resolve_token().get_secret_value() for s in self.senders}

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a service process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICS_SMS_")}
        env.update({
            "ICS_SMS_BROKER_URL": self.service_broker_url,
            "ICS_SMS_NAMESPACE": self.namespace,
            "ICS_SMS_SENDERS_FILE": str(self.senders_file),
            "ICS_SMS_PUBLIC_URL": self.public_url,
            "ICS_SMS_ICS_URL": self.ics_url,
            "ICS_SMS_CALLBACK_SECRET": self.secret,
            "ICS_SMS_REDIS_URL": self.redis_url,
            "ICS_SMS_PROMO_WINDOW_START": "00:00",
            "ICS_SMS_PROMO_WINDOW_END": "00:00",
            "ICS_SMS_LOG_LEVEL": "info",
            "ICS_SMS_LOG_FORMAT": "json",
            "ICS_SMS_LINGER_MS": "10",
            "ICS_SMS_CONNECT_RETRY_S": "30",
            "ICS_SMS_METRICS_PORT": "0",
            "ICS_SMS_RECEIVER_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.env_overrides)
        env.update(overrides)
        return env

    def declare(self) -> None:
        """Declare the namespace's topology, as ``ics-sms topology`` would."""
        connection = pika.BlockingConnection(pika.URLParameters(self.rabbitmq_url))
        try:
            channel = connection.channel()
            for exchange in self.topology.exchanges():
                channel.exchange_declare(exchange.name, exchange.type.value, durable=True)
            for queue in self.topology.queues():
                channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
            for binding in self.topology.bindings():
                channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
        finally:
            connection.close()

    def start_ledger(self, *, watch: Mapping[str, str] | None = None) -> Ledger:
        self.declare()
        self.ledger = Ledger(self.rabbitmq_url, self.topology, watch=watch).start_and_wait()
        return self.ledger

    # -- services -----------------------------------------------------------------------
    def spawn(self, role: str, args: Sequence[str], env: dict[str, str]) -> Service:
        index = sum(1 for s in self.services if s.role == role)
        service = Service(role, [sys.executable, "-m", "ics_sms", *args], env,
                          self.folder / f"{role}-{index}.log")
        self.services.append(service)
        return service

    def start(self, *, workers: int = 1, receiver: bool = True,
              sandbox: Sequence[str] | None = (), **env: str) -> None:
        """Start the sandbox (with these options; None: no sandbox), the receiver and
        ``workers`` workers at once, then wait until each is ready."""
        if sandbox is not None:
            self.start_sandbox(*sandbox, wait=False)
        if receiver:
            self.start_receiver(wait=False, **env)
        before = self.worker_consumers()
        self.start_workers(workers, wait=False, **env)
        if self.sandbox is not None:
            self.wait_sandbox_ready()
        if receiver:
            self.wait_receiver_ready()
        self.wait_workers(before + workers)

    def start_sandbox(self, *options: str, wait: bool = True, **env: str) -> SandboxClient:
        """``ics-sms sandbox`` on its port: every ordinary number delivered, receipts after
        300 ms, no clicks, seed 7; ``options`` (later ones win) change that."""
        args = ["sandbox", "--port", str(self.sandbox_port), "--seed", "7",
                "--delivery-ratio", "1", "--click-ratio", "0", "--receipt-delay-ms", "300",
                *options]
        service = self.spawn("sandbox", args, self.env(**env))
        self.sandbox = SandboxClient(f"http://127.0.0.1:{self.sandbox_port}", service)
        if wait:
            self.wait_sandbox_ready()
        return self.sandbox

    def wait_sandbox_ready(self) -> None:
        assert self.sandbox is not None
        url = self.sandbox.url + "/_stats"
        wait_for(lambda: _answers(url), timeout_s=60, what="the sandbox to start",
                 crashed=self.crashed)

    def start_receiver(self, *, wait: bool = True, **env: str) -> Service:
        service = self.spawn("receiver", ["receiver", "--port", str(self.receiver_port)],
                             self.env(**env))
        self.receiver = service
        if wait:
            self.wait_receiver_ready()
        return service

    def wait_receiver_ready(self, timeout_s: float = 60) -> float:
        url = f"http://127.0.0.1:{self.receiver_port}/readyz"
        return wait_for(lambda: _answers(url), timeout_s=timeout_s,
                        what="the receiver to be ready", crashed=self.crashed)

    def start_workers(self, count: int, *, wait: bool = True, **env: str) -> list[Service]:
        before = self.worker_consumers()
        workers = [self.spawn("worker", ["worker"], self.env(**env)) for _ in range(count)]
        if wait:
            self.wait_workers(before + count)
        return workers

    def worker_consumers(self) -> int:
        """Consumers on the service lane queue (each worker has one there)."""
        return self.probe.counts(self.topology.send_queue(Lane.SERVICE))[1]

    def wait_workers(self, count: int, timeout_s: float = 60) -> float:
        return wait_for(lambda: self.worker_consumers() >= count, timeout_s=timeout_s,
                        what=f"{count} workers consuming", crashed=self.crashed)

    def workers(self) -> list[Service]:
        return [s for s in self.services if s.role == "worker" and s.alive]

    def crashed(self) -> str | None:
        """Why a service that should be running is gone, if one is."""
        for service in self.services:
            if not service.expected_exit and not service.alive:
                return (f"{service.role} (pid {service.pid}) exited with status "
                        f"{service.process.returncode}:\n{service.tail()}")
        return None

    def proxy_to(self, host: str, port: int) -> ProxyThread:
        proxy = ProxyThread(host, port).start()
        self.proxies.append(proxy)
        return proxy

    def rabbitmq_proxy(self) -> ProxyThread:
        """A cuttable proxy to RabbitMQ; services started afterwards connect through it."""
        target = pika.URLParameters(self.rabbitmq_url)
        proxy = self.proxy_to(target.host, target.port)
        self.service_broker_url = url_at(self.rabbitmq_url, proxy.port)
        return proxy

    def publisher(self, campaign: Campaign, *, via: str | None = None,
                  **options: Any) -> CampaignPublisher:
        return CampaignPublisher(via or self.rabbitmq_url, self.topology, self.senders,
                                 campaign.requests, **options)

    # -- waiting for the end of a campaign -----------------------------------------------
    def settle(self, ids: Collection[str], *, timeout_s: float) -> dict[str, Any]:
        """Wait (at most ``timeout_s``) until every id has a final status, the sandbox has
        posted every receipt and every queue of the namespace is empty with nothing unacked.
        Never raises: the accounting says what is missing. Returns what was seen."""
        assert self.ledger is not None
        ledger = self.ledger
        started = time.monotonic()
        wanted = len(ids)
        terminal = poll_until(lambda: ledger.finished(ids) >= wanted, timeout_s, 0.2)
        finished_s = time.monotonic() - started
        left = max(timeout_s - finished_s, 10.0)
        receipts = True
        if self.sandbox is not None:
            sandbox = self.sandbox
            # every request answered (a late answer may still be pending), every receipt posted
            receipts = poll_until(lambda: _sandbox_idle(sandbox.stats()), left, 0.2)
        state: dict[str, tuple[int, int | None]] = {}

        quiet_polls = 0

        def quiet() -> bool:
            # rabbitmqctl's counts can lag: the ready count of every queue (passive
            # declare, exact) must be 0 too, twice in a row (a retry copy in transit)
            nonlocal state, quiet_polls
            state = self.queue_state()
            now_quiet = (all(ready == 0 and not unacked for ready, unacked in state.values())
                         and all(self.probe.counts(q)[0] == 0 for q in state)
                         and (self.sandbox is None or _sandbox_idle(self.sandbox.stats())))
            quiet_polls = quiet_polls + 1 if now_quiet else 0
            return quiet_polls >= 2

        empty = poll_until(quiet, max(timeout_s - (time.monotonic() - started), 10.0), 0.5)
        return {"all_terminal": terminal, "terminal_after_s": round(finished_s, 2),
                "receipts_posted": receipts, "queues_empty": empty,
                "busy_queues": {q: s for q, s in state.items() if s[0] or s[1]}}

    def drain_events(self, timeout_s: float = 15.0) -> bool:
        """After the services stopped: wait until the ledger has read every event and
        dead letter left in the namespace (their queues hold nothing ready)."""
        queues = (self.topology.events_queue, self.topology.dead_queue)
        return poll_until(lambda: all(self.probe.counts(q)[0] == 0 for q in queues)
                          and (self.ledger is None or self.ledger.idle_for(0.3)),
                          timeout_s, 0.2)

    def queue_state(self) -> dict[str, tuple[int, int | None]]:
        return self.probe.queues(self.namespace, self.topology.queue_names())

    # -- the end ------------------------------------------------------------------------
    def stop_services(self) -> dict[str, int | None]:
        """SIGTERM the running services (workers, then receivers, then the sandbox) and
        collect their exit statuses."""
        present = list(dict.fromkeys(s.role for s in self.services))
        roles = sorted(present, key=lambda r: (r != "worker", r == "sandbox"))
        for role in roles:
            running = [s for s in self.services if s.role == role and s.alive]
            for service in running:
                service.terminate()
            for service in running:
                self.stop_statuses[f"{service.role}-{service.pid}"] = service.stop()
        return self.stop_statuses

    def unclean_stops(self) -> list[str]:
        return [f"{name} exited {status} on SIGTERM (expected 0)"
                for name, status in self.stop_statuses.items() if status != 0]

    def logs(self, roles: Collection[str] | None = None) -> dict[str, str]:
        return {f"{s.role}-{s.pid}": s.log_text() for s in self.services
                if roles is None or s.role in roles}

    def diagnostics(self) -> str:
        lines = [f"namespace {self.namespace}"]
        with contextlib.suppress(Exception):
            lines.append(f"queues: {self.queue_state()}")
        if self.ledger is not None:
            lines.append(f"ledger: {self.ledger.snapshot()}")
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                lines.append(f"sandbox: {self.sandbox.stats()}")
        for service in self.services:
            lines.append(f"--- {service!r} {service.log_path}\n{service.tail(20)}")
        return "\n".join(lines)

    def close(self) -> None:
        for service in self.services:
            service.stop(10.0)
        for cleanup in self.cleanups:
            cleanup()
        for proxy in self.proxies:
            proxy.close()
        if self.ledger is not None:
            self.ledger.stop()
        self.probe.close()
        with contextlib.suppress(AMQPError, OSError):
            self._delete_namespace()
        self._delete_contexts()

    def _delete_namespace(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.rabbitmq_url))
        try:
            channel = connection.channel()
            for queue in self.topology.queues():
                channel.queue_delete(queue.name)
            for exchange in self.topology.exchanges():
                channel.exchange_delete(exchange.name)
        finally:
            connection.close()

    def _delete_contexts(self) -> None:
        """Workers leave a record per message in Redis (days of TTL), and older ones a
        context: everything of the stack's namespace goes."""
        with contextlib.suppress(RedisError, OSError):  # best effort: the keys expire
            asyncio.run(delete_prefix(self.redis_url, f"ics-sms:{self.namespace}"))


def _sandbox_idle(stats: Mapping[str, Any]) -> bool:
    return stats["receipts_pending"] == 0 and not stats.get("requests_in_flight")


def _answers(url: str) -> bool:
    try:
        return http_request(url, timeout_s=2)[0] == 200
    except OSError:
        return False
