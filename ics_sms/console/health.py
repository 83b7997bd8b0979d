"""The health page's facts: queues, receiver and workers, ICS error rate, promotional window.

Queue depths come from the RabbitMQ management API when ``ICS_SMS_RABBITMQ_MANAGEMENT_URL``
is set (ready, unacked and consumers per queue); otherwise from AMQP passive declares,
which tell ready messages and consumers but not unacked ones (shown as unknown).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp
import pika
import pika.exceptions
from redis.exceptions import RedisError

from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.workers.heartbeat import Heartbeat, read_heartbeats
from ics_sms.workers.window import PromoWindow

__all__ = ["Health", "QueueState", "WindowState", "collect_health", "queue_states"]

_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    ready: int | None
    unacked: int | None
    """None: unknown (no management API configured)."""
    consumers: int | None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class WindowState:
    open: bool
    hours: str
    changes_at: datetime
    always_open: bool


@dataclass(frozen=True, slots=True)
class Health:
    queues: list[QueueState]
    queues_source: str
    receiver: str
    receiver_ok: bool
    workers: list[Heartbeat] = field(default_factory=list)
    workers_problem: str = ""
    window: WindowState | None = None

    @property
    def ics_requests(self) -> int:
        return sum(w.ics_requests for w in self.workers)

    @property
    def ics_failed(self) -> int:
        return sum(w.ics_failed for w in self.workers)

    @property
    def ics_error_rate(self) -> float | None:
        return self.ics_failed / self.ics_requests if self.ics_requests else None


def _queues(settings: Settings) -> list[str]:
    topology = settings.topology
    return [*(topology.send_queue(lane) for lane in Lane), topology.events_queue,
            topology.dead_queue]


def _passive(url: str, names: list[str]) -> list[QueueState]:
    params = pika.URLParameters(url)
    params.socket_timeout = _TIMEOUT_S
    params.blocked_connection_timeout = _TIMEOUT_S
    connection = pika.BlockingConnection(params)
    states = []
    try:
        channel = connection.channel()
        for name in names:
            try:
                frame = channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                states.append(QueueState(name, None, None, None, exc.reply_text))
                channel = connection.channel()
                continue
            states.append(QueueState(name, int(frame.method.message_count), None,
                                     int(frame.method.consumer_count)))
    finally:
        connection.close()
    return states


async def _managed(settings: Settings, management_url: str,
                   names: list[str]) -> list[QueueState]:
    parts = urlsplit(management_url)
    user_password = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
    auth = {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}
    netloc = parts.hostname or "127.0.0.1"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    vhost = unquote(urlsplit(settings.broker_urls[0]).path[1:]) or "/"
    states = []
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    async with aiohttp.ClientSession(headers=auth, timeout=timeout) as http:
        for name in names:
            url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}"
            async with http.get(url) as response:
                if response.status != 200:
                    states.append(QueueState(name, None, None, None,
                                             f"management API answered {response.status}"))
                    continue
                body = await response.json()
            states.append(QueueState(name, int(body.get("messages_ready", 0)),
                                     int(body.get("messages_unacknowledged", 0)),
                                     int(body.get("consumers", 0))))
    return states


async def queue_states(settings: Settings) -> tuple[list[QueueState], str]:
    """Each main queue's state, and where the figures come from."""
    names = _queues(settings)
    url = settings.broker_urls[0]
    if url.startswith("memory:"):
        return [QueueState(n, None, None, None, "embedded broker") for n in names], \
            "the embedded broker (memory://) has no depths to read"
    management = settings.rabbitmq_management_url
    try:
        if management is not None:
            return await _managed(settings, management.get_secret_value(), names), \
                "RabbitMQ management API"
        return await asyncio.to_thread(_passive, url, names), \
            "AMQP passive declares (set ICS_SMS_RABBITMQ_MANAGEMENT_URL for unacked counts)"
    except (aiohttp.ClientError, TimeoutError, pika.exceptions.AMQPError, OSError) as exc:
        reason = type(exc).__name__
        return [QueueState(n, None, None, None, f"broker unreachable ({reason})")
                for n in names], "unreachable"


async def _receiver(settings: Settings) -> tuple[str, bool]:
    url = str(settings.public_url).rstrip("/") + "/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) \
                as http, http.get(url) as response:
            return f"{url}: HTTP {response.status}", response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{url}: no answer ({type(exc).__name__})", False


def window_state(settings: Settings, now: datetime | None = None) -> WindowState:
    window = PromoWindow.of(settings.promo_window_start, settings.promo_window_end,
                            settings.promo_timezone)
    now = now or datetime.now(UTC)
    hours = f"{window.start:%H:%M}-{window.end:%H:%M} {settings.promo_timezone}"
    return WindowState(window.is_open(now), hours,
                       now + timedelta(seconds=window.seconds_until_change(now)),
                       window.always_open)


async def collect_health(settings: Settings) -> Health:
    (queues, source), (receiver, receiver_ok) = await asyncio.gather(
        queue_states(settings), _receiver(settings))
    problem = ""
    try:
        workers = await read_heartbeats(settings)
    except (RedisError, OSError) as exc:
        workers, problem = [], f"cannot read heartbeats ({type(exc).__name__})"
    if settings.redis_url.startswith("memory:"):
        problem = "in-process workers (memory://) write no heartbeats"
    return Health(queues, source, receiver, receiver_ok, workers, problem,
                  window_state(settings))
