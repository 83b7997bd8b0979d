"""Scenario 5: poison and hostile input, at the send queue and at the receiver.

``test_poison_send_requests``: any AMQP client may publish to ``sms.send``, so the worker
gets bodies that are not JSON, wrong schema versions, huge texts, invalid numbers, unknown
senders, hostile headers... interleaved with ordinary messages. Expected: the worker never
crashes nor stalls, every bad message ends in ``sms.dead`` with an ``x-ics-reason`` (and a
``rejected`` event when its message id can be read), the good ones are delivered.

``test_hostile_http_at_the_receiver``: malformed, oversized, mis-encoded and forged
requests at the receiver, while slow clients (slowloris: headers, or a body, one byte
every half second) hold connections open and ordinary requests keep coming. Expected: no
5xx for bad input, no crash, no event from a forged request, the ordinary requests are
answered promptly throughout, and the slow clients are disconnected within
``SLOW_CLIENT_BOUND_S``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import pika
import pytest

from ics_sms.schemas.messages import MAX_TEXT_CHARS
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.smsgid import SmsgidSigner
from tests.chaos.campaign import TEMPLATE_ID, build_campaign
from tests.chaos.conftest import MakeStack
from tests.chaos.harness import FAST, FULL, Stack, http_request, poll_until, profiles
from tests.chaos.results import Row, record
from tests.chaos.scenario import finish

# -- poison at the send queue ---------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """A raw message for ``sms.send``, and what must become of it."""

    name: str
    body: bytes
    reason: str | None  # the x-ics-reason of its dead letter; None: not poison, delivered
    event: str | None  # the final status of the message id inside the body, if any
    headers: dict[str, Any] = field(default_factory=dict)
    lane: Lane = Lane.SERVICE
    also: frozenset[str] = frozenset()  # other acceptable final statuses (with a dead letter)


def _request(message_id: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"schema_version": 1, "message_id": message_id,
                            "campaign_id": "poison", "to": "+919812345678",
                            "text": "Your code is 4821", "sender": "chaos-otp",
                            "dlt_template_id": TEMPLATE_ID}
    data.update(fields)
    return data


def _json(message_id: str, **fields: Any) -> bytes:
    return orjson.dumps({k: v for k, v in _request(message_id, **fields).items()
                         if v is not _DROP})


_DROP = object()


def poison_cases(prefix: str) -> list[Poison]:
    def mid(name: str) -> str:
        return f"{prefix}-{name}"

    nested = b'{"message_id": "%s", "campaign_id": "c", "metadata": {"a": ' % mid(
        "deep-300").encode() + b"[" * 300 + b"]" * 300 + b"}}"
    very_nested = b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    return [
        Poison("not-json", b"this is not json {", "invalid_message", None),
        Poison("binary", bytes(range(256)) * 4, "invalid_message", None),
        Poison("empty", b"", "invalid_message", None),
        Poison("json-array", b"[1, 2, 3]", "invalid_message", None),
        Poison("json-null", b"null", "invalid_message", None),
        Poison("schema-v2", _json(mid("schema-v2"), schema_version=2), "invalid_message",
               "rejected"),
        Poison("schema-v-string", _json(mid("schema-v-string"), schema_version="1"),
               "invalid_message", "rejected"),
        Poison("text-too-long", _json(mid("text-too-long"), text="x" * (MAX_TEXT_CHARS + 1)),
               "invalid_message", "rejected"),
        Poison("text-1mb", _json(mid("text-1mb"), text="y" * 1_000_000), "invalid_message",
               "rejected"),
        Poison("text-blank", _json(mid("text-blank"), text="   \n\t "), "invalid_message",
               "rejected"),
        Poison("number-letters", _json(mid("number-letters"), to="+91abcdefghij"),
               "invalid_message", "rejected"),
        Poison("number-short", _json(mid("number-short"), to="12345"), "invalid_message",
               "rejected"),
        Poison("number-impossible", _json(mid("number-impossible"), to="+999999999999999"),
               "invalid_message", "rejected"),
        Poison("unknown-sender", _json(mid("unknown-sender"), sender="nobody"),
               "unknown_sender", "rejected"),
        Poison("no-dlt-template", _json(mid("no-dlt-template"), dlt_template_id=_DROP),
               "dlt", "rejected"),
        Poison("bad-message-id", _json("has spaces and / slashes"), "invalid_message", None),
        Poison("long-message-id", _json("m" * 65), "invalid_message", None),
        Poison("long-campaign", _json(mid("long-campaign"), campaign_id="c" * 129),
               "invalid_message", "rejected"),
        Poison("metadata-51-keys", _json(mid("metadata-51-keys"),
                                         metadata={f"k{i}": i for i in range(51)}),
               "invalid_message", "rejected"),
        Poison("deep-300", nested, "invalid_message", "rejected"),
        Poison("deep-5000", very_nested, "invalid_message", None),
        Poison("naive-expiry", _json(mid("naive-expiry"), expires_at="2030-01-01T00:00:00"),
               "invalid_message", "rejected"),
        Poison("expired", _json(mid("expired"), expires_at="2020-01-01T00:00:00Z"), "expired",
               "expired"),
        Poison("bad-utf8", b'{"message_id": "%s", "text": "\xff\xfe"}' % mid("bad-utf8").encode(),
               "invalid_message", None),
        Poison("lone-surrogate", b'{"message_id": "%s", "campaign_id": "c", "text": "\\ud800"}'
               % mid("lone-surrogate").encode(), "invalid_message", None),
        # hostile but valid: they must simply be delivered
        Poison("huge-unknown-field", _json(mid("huge-unknown-field"), junk="z" * 4_000_000),
               None, "delivered"),
        Poison("attempt-header-garbage", _json(mid("attempt-header-garbage")), None,
               "delivered", headers={"x-ics-attempt": "many", "x-ics-parked": -4}),
        Poison("attempt-header-huge", _json(mid("attempt-header-huge")), None, "delivered",
               headers={"x-ics-attempt": 10**12}),
        Poison("wrong-lane", _json(mid("wrong-lane"), sender="chaos-offers",
                                   text="ACME offer 20% off"),
               None, "delivered"),
        # metadata is opaque JSON, but a number beyond 64 bits is refused (never a crash)
        Poison("metadata-bigint", b'{"message_id": "%s", "campaign_id": "c", "to": '
               b'"+919812345678", "text": "Your code is 1", "sender": "chaos-otp", '
               b'"dlt_template_id": "%s", "metadata": {"n": 18446744073709551616}}'
               % (mid("metadata-bigint").encode(), TEMPLATE_ID.encode()), "invalid_message",
               "rejected"),
        Poison("metadata-bigint-unknown-sender", b'{"message_id": "%s", "campaign_id": "c", '
               b'"to": "+919812345678", "text": "Your code is 1", "sender": "nobody", '
               b'"metadata": {"n": -9223372036854775809}}'
               % mid("metadata-bigint-unknown-sender").encode(), "invalid_message",
               "rejected"),
    ]


def publish_raw(url: str, stack: Stack, items: list[tuple[str, Poison]]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for case_id, poison in items:
            properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                              message_id=case_id,
                                              headers=poison.headers or None)
            channel.basic_publish(stack.topology.send_exchange,
                                  stack.topology.send_routing_key(poison.lane), poison.body,
                                  properties, mandatory=True)
    finally:
        connection.close()


POISON_REPEATS = {FAST: 1, FULL: 40}
WAIT_S = {FAST: 30, FULL: 300}
GOOD = {FAST: 200, FULL: 5_000}


@pytest.mark.parametrize("profile", profiles())
def test_poison_send_requests(profile: str, make_stack: MakeStack) -> None:
    stack = make_stack("poison")
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=1)
    good = build_campaign(GOOD[profile], f"good-{profile}", service="chaos-otp",
                          promotional="chaos-offers")
    publisher = stack.publisher(good, chunk=50)
    started = time.monotonic()
    publisher.start()
    items: list[tuple[str, Poison]] = []
    expected = dict(good.expected)
    for repeat in range(POISON_REPEATS[profile]):
        for poison in poison_cases(f"p{repeat}"):
            case_id = f"p{repeat}-{poison.name}"
            items.append((case_id, poison))
            if poison.event is not None:
                expected[case_id] = frozenset({poison.event}) | poison.also
    publish_raw(stack.rabbitmq_url, stack, items)
    publisher.join(120)
    confirmed = [*publisher.confirmed_ids(), *(c for c, p in items if p.event is not None)]
    wanted_dead = sum(1 for _, p in items if p.reason is not None)
    ended = poll_until(lambda: ledger.finished(confirmed) >= len(confirmed)
                       and sum(1 for d in ledger.dead_letters() if d.message_id
                               and d.message_id.startswith("p")) >= wanted_dead,
                       WAIT_S[profile], 0.2)

    problems = list(publisher.errors)
    if not ended:
        problems.append(f"not every message ended within {WAIT_S[profile]}s")
    dead_by_id: dict[str, list[str | None]] = {}
    for letter in ledger.dead_letters():
        dead_by_id.setdefault(letter.message_id or "", []).append(letter.reason)
    for case_id, poison in items:
        reasons = dead_by_id.get(case_id, [])
        final = set(ledger.terminal_of(case_id).values())
        if poison.reason is None and final & poison.also:
            if not any(reasons):
                problems.append(f"{poison.name}: ended {sorted(final)} without a dead letter "
                                "giving the reason")
        elif poison.reason is None and reasons:
            problems.append(f"{poison.name}: a valid message was dead-lettered ({reasons})")
        elif poison.reason is not None and poison.reason not in reasons:
            problems.append(f"{poison.name}: expected a dead letter with x-ics-reason "
                            f"{poison.reason!r}, got {reasons or 'none'}")
    worker_logs = "\n".join(stack.logs(["worker"]).values())
    for marker in ("batch task crashed", "Traceback"):
        if marker in worker_logs:
            problems.append(f"the worker log shows {marker!r}")
    row = finish(stack, scenario="poison send requests", profile=profile, expected=expected,
                 confirmed=confirmed, started=started, settle_timeout_s=10, problems=problems,
                 figures={"poison_messages": len(items), "cases": len(poison_cases("x"))},
                 duplicate_bound=0)
    assert row.passed, "\n".join(row.problems)


# -- hostile HTTP at the receiver -----------------------------------------------------------

SLOW_CLIENT_BOUND_S = 15.0
"""A client that has not sent its whole request within this long must be disconnected."""
SLOW_CLIENTS = {FAST: 2, FULL: 50}
PROMPT_S = 2.0
"""Ordinary requests must be answered within this long while the receiver is attacked."""


def raw_exchange(port: int, request: bytes, timeout_s: float = 10.0) -> int | None:
    """Send raw bytes, return the HTTP status of the answer (None: closed without one)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # it may close early (oversized): read the answer
            sock.sendall(request)
        with contextlib.suppress(OSError):  # a timeout or a reset ends the answer
            while chunk := sock.recv(65536):
                data += chunk
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def _post(path: str, body: bytes, content_type: str = "application/json",
          extra: str = "") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: receiver\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode() + body


def hostile_requests(path: str, signer: SmsgidSigner, forger: SmsgidSigner,
                     max_body: int, who: str = "chaos-otp") -> list[tuple[str, bytes]]:
    """(name, raw request) pairs; each must get an answer below 500."""
    def groups(meta: str, event: str = "delivered", **extra: Any) -> bytes:
        return orjson.dumps([{"event": event, "data": [{"ts": 1764230400, "meta": meta,
                                                        **extra}]}])

    oversized = b"[" + b" " * (max_body + 10) + b"]"
    chunked_head = (f"POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunk = b" " * 65536
    chunked = chunked_head + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * (max_body // 65536 + 2) \
        + b"0\r\n\r\n"
    return [
        ("forged smsgid (wrong secret)", _post(path, groups(forger.sign("h-1", who)))),
        ("forged smsgid (no mac)", _post(path, groups("h-2"))),
        ("forged smsgid (mac of another id)",
         _post(path, groups("h-3." + signer.sign("h-4", who).rpartition(".")[2]))),
        ("unknown tracking token", _post("/ics/not-a-sender-token/receipts",
                                         groups(signer.sign("h-5", who)))),
        ("empty token", _post("/ics//receipts", b"[]")),
        ("path traversal", _post("/ics/../../etc/passwd", b"[]")),
        ("PUT", _post(path, b"[]").replace(b"POST", b"PUT", 1)),
        ("DELETE", f"DELETE {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".encode()),
        ("not json", _post(path, b"{this is not json")),
        ("json object, not groups", _post(path, b'{"a": 1}')),
        ("deeply nested", _post(path, b"[" * 10000 + b"]" * 10000)),
        ("nul bytes", _post(path, b"\x00" * 100)),
        ("huge ts", _post(path, groups(signer.sign("h-6", who)).replace(b"1764230400", b"9" * 40))),
        ("failed without code", _post(path, groups(signer.sign("h-7", who), "failed"))),
        ("unknown event", _post(path, groups(signer.sign("h-8", who), "exploded"))),
        ("oversized body", _post(path, oversized)),
        ("oversized chunked body", chunked),
        ("content-length not a number",
         _post(path, b"[]").replace(b"Content-Length: 2", b"Content-Length: abc")),
        ("10 KB header", _post(path, b"[]", extra=f"X-Big: {'a' * 10240}\r\n")),
        ("200 headers", _post(path, b"[]", extra="".join(f"X-H{i}: v\r\n" for i in range(200)))),
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("16 KB URL",
         f"GET /{'a' * 16384} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".encode()),
        ("operator receipt, bad status",
         f"GET {path}?smsgid={signer.sign('h-9', who)}&status=EXPLODED HTTP/1.1\r\nHost: r\r\n"
         "Connection: close\r\n\r\n".encode()),
        ("form, invalid utf-8",
         _post(path, b"smsgid=\xff\xfe&status=DELIVRD", "application/x-www-form-urlencoded")),
        ("form, unknown charset", _post(path, b"smsgid=a&status=DELIVRD",
                                        "application/x-www-form-urlencoded; charset=bogus")),
        ("multipart without boundary", _post(path, b"smsgid=a", "multipart/form-data")),
        ("multipart garbage", _post(path, b"--zz\r\ngarbage", "multipart/form-data; "
                                    "boundary=zz")),
        ("gzip that is not gzip",
         _post(path, b"notgzip", extra="Content-Encoding: gzip\r\n")),
        ("deflate that is not deflate",
         _post(path, b"notdeflate", extra="Content-Encoding: deflate\r\n")),
    ]


class SlowClient(threading.Thread):
    """Sends a request one byte every ``interval_s`` until the server closes the connection
    or ``give_up_s`` passes; ``closed_after_s`` says when the server closed it."""

    def __init__(self, port: int, request: bytes, *, prefix: bytes = b"",
                 interval_s: float = 0.5, give_up_s: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.request = request
        self.interval_s = interval_s
        self.give_up_s = give_up_s
        self.closed_after_s: float | None = None
        self.answer: bytes = b""

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(self.prefix)
            sock.setblocking(False)
            for byte in self.request:
                if time.monotonic() - started > self.give_up_s:
                    return
                if self._closed(sock):
                    self.closed_after_s = time.monotonic() - started
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    self.closed_after_s = time.monotonic() - started
                    return
                time.sleep(self.interval_s)  # slowloris: the point is to be slow

    def _closed(self, sock: socket.socket) -> bool:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return False
        except OSError:
            return True
        self.answer += data
        return not data or bool(self.answer)


def _watch_ordinary(url: str, stop: threading.Event, latencies: list[float],
                    failures: list[str]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            status, _ = http_request(url, timeout_s=10)
            if status != 200:
                failures.append(f"ordinary request answered {status}")
        except OSError as exc:
            failures.append(f"ordinary request failed: {exc}")
        latencies.append(time.monotonic() - started)
        stop.wait(0.2)


@pytest.mark.parametrize("profile", profiles())
def test_hostile_http_at_the_receiver(profile: str, make_stack: MakeStack) -> None:
    stack = make_stack("hostile-http")
    stack.use_senders()
    ledger = stack.start_ledger()
    stack.start(workers=0, sandbox=None)
    port = stack.receiver_port
    sender = stack.senders.get("chaos-otp")
    assert sender is not None
    path = sender.tracking_path()
    signer = SmsgidSigner(stack.secret)
    forger = SmsgidSigner("not-the-callback-secret")
    started = time.monotonic()

    head = (f"POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            + "".join(f"X-Slow-{i}: {'s' * 20}\r\n" for i in range(60)) + "\r\n").encode()
    body_head = (f"POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                 "Content-Length: 2000\r\n\r\n").encode()
    give_up_s = SLOW_CLIENT_BOUND_S + 2
    slow: list[tuple[str, SlowClient]] = []
    for _ in range(SLOW_CLIENTS[profile]):
        slow.append(("headers", SlowClient(port, head, give_up_s=give_up_s)))
        slow.append(("body", SlowClient(port, b"[" + b" " * 1999, prefix=body_head,
                                        give_up_s=give_up_s)))
    for _, client in slow:
        client.start()

    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    watcher = threading.Thread(target=_watch_ordinary, daemon=True, args=(
        f"http://127.0.0.1:{port}/healthz", stop, latencies, failures))
    watcher.start()

    answers: dict[str, int | None] = {}
    for name, request in hostile_requests(path, signer, forger, 256 * 1024):
        answers[name] = raw_exchange(port, request, timeout_s=5)
    for _, client in slow:
        client.join(give_up_s + 10)
    stop.set()
    watcher.join(15)

    problems = [f"{name}: answered {status}" for name, status in answers.items()
                if status is not None and status >= 500]
    problems += [f"{name}: connection closed without an answer" for name, status in
                 answers.items() if status is None and name not in _MAY_CLOSE]
    if stack.crashed():
        problems.append(f"the receiver died: {stack.crashed()}")
    alive = http_request(f"http://127.0.0.1:{port}/healthz")[0] == 200
    if not alive:
        problems.append("the receiver no longer answers /healthz")
    if ledger.events:
        problems.append(f"{ledger.events} events came out of forged or malformed requests")
    slow_kept = {kind: [c.closed_after_s for k, c in slow if k == kind] for kind in
                 ("headers", "body")}
    for kind, closes in slow_kept.items():
        still_open = sum(1 for c in closes if c is None or c > SLOW_CLIENT_BOUND_S)
        if still_open:
            problems.append(f"{still_open} of {len(closes)} slow-{kind} clients were still "
                            f"connected after {SLOW_CLIENT_BOUND_S:g}s (no {kind} timeout)")
    problems += failures[:5]
    worst_s = max(latencies, default=0.0)
    if worst_s > PROMPT_S:
        problems.append(f"an ordinary request took {worst_s:.1f}s during the attack")
    stack.stop_services()
    problems += stack.unclean_stops()
    row = record(Row(
        scenario="hostile HTTP + slowloris", profile=profile, messages=len(answers),
        duration_s=round(time.monotonic() - started, 1), problems=problems,
        figures={"answers": answers, "slow_clients": len(slow),
                 "slow_closed_after_s": slow_kept, "ordinary_requests": len(latencies),
                 "ordinary_worst_s": round(worst_s, 3)}))
    assert row.passed, "\n".join(row.problems)


_MAY_CLOSE: frozenset[str] = frozenset()
"""Requests the receiver may drop without an answer (none: aiohttp answers them all)."""
