"""The producer campaign engines embed: validated send requests in, broker confirms out.

::

    with Producer.from_settings(settings) as producer:
        producer.publish({"message_id": "m-1", "campaign_id": "c", "to": "+919812345678",
                          "text": "Your OTP is 1234", "sender": "acme-otp"})
        count = producer.publish_many(requests, on_progress=print)

Guarantees:

- a request is validated before anything is sent; an invalid one raises
  :class:`~ics_sms.producers.errors.InvalidRequest` naming field and reason;
- messages are persistent JSON (``content_type=application/json``, ``delivery_mode=2``,
  ``message_id``), published *mandatory* to the send exchange with the lane of the sender
  as routing key (unknown sender, or no senders at all: the service lane, where the worker
  turns it into a ``rejected`` event);
- a call returns only once the broker confirmed every message; a refusal (nack), an
  unroutable message or a lost connection that cannot be re-established raises
  :class:`~ics_sms.producers.errors.PublishError` with ``confirmed``, the number of requests
  of the call (from the first) that are safely on the broker;
- a dropped connection is re-established within the
  :class:`~ics_sms.producers.retry.RetryPolicy` (kombu's ``ensure``), the topology is
  declared again and the unconfirmed messages are published again (at-least-once:
  ``message_id`` is the idempotency key).

Connection handling, retries and declarations use kombu. Publishing itself writes
pre-encoded frames (:mod:`ics_sms.producers.framing`) on the py-amqp connection underneath
kombu and keeps up to ``max_in_flight`` confirms outstanding (:mod:`ics_sms.broker.confirms`);
kombu's own publish waits for each confirm in turn, which caps a producer at a few thousand
msgs/s.

A producer holds one connection and one channel; it is not thread-safe (use one per thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

import amqp.exceptions
import kombu.connection
import kombu.exceptions
import structlog
from pydantic import SecretStr, ValidationError

from ics_sms.broker.base import Outgoing
from ics_sms.broker.codec import send_message
from ics_sms.broker.confirms import ConfirmTracker
from ics_sms.producers.declare import declare_topology
from ics_sms.producers.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    InvalidRequest,
    ProducerError,
    PublishError,
    PublishInterrupted,
    TopologyMismatch,
)
from ics_sms.producers.framing import PublishFramer
from ics_sms.producers.retry import RetryPolicy
from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.senders import Lane, Senders, load_senders
from ics_sms.schemas.settings import Settings, redact_url, split_broker_url
from ics_sms.schemas.topology import Topology

__all__ = ["AMQP_SCHEMES", "OnProgress", "Producer", "RequestLike", "validate_request"]

log = structlog.get_logger(__name__)

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
RequestLike = SendRequest | Mapping[str, Any]
OnProgress = Callable[[int], None]
"""Called with how many requests of the current call the broker has confirmed so far."""

_KombuConnection: Any = kombu.connection.Connection  # kombu is untyped

_WRITE_BATCH = 128
"""Messages encoded into one socket write."""


def validate_request(item: object) -> SendRequest:
    """``item`` as a :class:`SendRequest`; raises :class:`InvalidRequest` with the reasons."""
    if isinstance(item, SendRequest):
        return item
    if not isinstance(item, Mapping):
        raise InvalidRequest([f"expected a SendRequest or a mapping, got {type(item).__name__}"])
    try:
        return SendRequest.model_validate(item)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None


_UNSUPPORTED = ("the producer publishes to RabbitMQ: the broker URL must start with amqp:// or "
                "amqps://, not {scheme}://")


def _addresses(url: str) -> list[str]:
    """The broker addresses of ``url`` (several: full URLs separated by commas)."""
    try:
        return list(split_broker_url(url, schemes=AMQP_SCHEMES, unsupported=_UNSUPPORTED))
    except ValueError as exc:
        raise ProducerError(str(exc)) from None


class Producer:
    """Publishes send requests to RabbitMQ with publisher confirms (see the module doc)."""

    def __init__(
        self,
        broker_url: str | SecretStr,
        topology: Topology,
        senders: Senders | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_in_flight: int = 2000,
        confirm_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        declare: bool = True,
        connection_name: str = "ics-sms producer",
    ) -> None:
        url = broker_url.get_secret_value() if isinstance(broker_url, SecretStr) else broker_url
        addresses = _addresses(url)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if confirm_timeout_s <= 0:
            raise ValueError("confirm_timeout_s must be positive")
        self._url_redacted = redact_url(url)
        self._topology = topology
        self._senders = senders or Senders()
        self._retry = retry or RetryPolicy()
        self._max_in_flight = max_in_flight
        self._batch = min(_WRITE_BATCH, max_in_flight)
        self._confirm_timeout_s = confirm_timeout_s
        self._declare = declare
        # several addresses: kombu tries them in the order given and moves on to the next
        # after a failed attempt or a lost connection (its "round-robin" failover)
        self._conn: Any = _KombuConnection(
            addresses, failover_strategy="round-robin", connect_timeout=connect_timeout_s,
            transport_options={"client_properties": {"connection_name": connection_name}},
        )
        self._channel: Any = None
        self._framer: PublishFramer | None = None
        self._needs_setup = True
        self._connected = False
        self._window: ConfirmTracker[Outgoing] = ConfirmTracker()
        self._unsent: list[Outgoing] = []
        self._call_confirmed = 0
        self._on_progress: OnProgress | None = None
        self._published = 0
        self._reconnects = 0
        # kombu counts a retry per address tried and waits only after a full round: each
        # retry of the policy is one round of every address
        rounds = self._retry.max_retries + 1
        self._kombu_options = {**self._retry.kombu_options(),
                               "max_retries": rounds * len(addresses) - 1}
        ensure: Any = self._conn.ensure
        self._pump_ensured: Callable[[int], None] = ensure(
            self, self._pump, errback=self._on_connection_error, **self._kombu_options
        )

    @classmethod
    def from_settings(cls, settings: Settings, senders: Senders | None = None,
                      **options: Any) -> Self:
        """A producer for ``ICS_SMS_*`` settings; reads the senders file when none is given.

        The retry budget is ``settings.connect_retry_s``. Raises
        :class:`~ics_sms.schemas.senders.SenderError` for an unusable senders file.
        """
        options.setdefault("retry", RetryPolicy.within(settings.connect_retry_s))
        return cls(
            settings.broker_url,
            settings.topology,
            load_senders(settings.senders_file) if senders is None else senders,
            **options,
        )

    def __repr__(self) -> str:
        return (f"<Producer broker={self._url_redacted} namespace={self._topology.namespace!r} "
                f"connected={self._connected} published={self._published} "
                f"in_flight={len(self._window)} reconnects={self._reconnects}>")

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        """The kombu ``Connection`` underneath (for diagnostics and tests)."""
        return self._conn

    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def published(self) -> int:
        """Messages the broker confirmed over the life of this producer."""
        return self._published

    def lane_for(self, request: SendRequest) -> Lane:
        """The lane of the request's sender (named, else the default); service when unknown."""
        sender = self._senders.get(request.sender)
        return Lane.SERVICE if sender is None else sender.lane

    def connect(self) -> None:
        """Connect (within the retry budget) and declare the topology."""
        if self._connected:
            return
        try:
            self._conn.ensure_connection(
                errback=self._on_connection_error, **self._kombu_options
            )
        except (kombu.exceptions.OperationalError, *self._conn.connection_errors,
                *self._conn.channel_errors) as exc:
            raise BrokerUnavailable(
                f"cannot connect to the broker at {self._url_redacted}: {_reason(exc)}"
            ) from None
        self._connected = True
        try:
            self._run(self._pump_ensured, 0)  # channel, confirm mode, topology
        except BaseException:
            self._discard()
            raise

    def close(self) -> None:
        """Close the connection cleanly."""
        self._forget()
        try:
            self._conn.release()
        except (*self._conn.connection_errors, *self._conn.channel_errors) as exc:
            log.debug("producer.close_failed", error=_reason(exc))

    def publish(self, request: RequestLike) -> None:
        """Publish one request and return once the broker confirmed it."""
        self._publish_all(enumerate([validate_request(request)]), None)

    def publish_many(self, requests: Iterable[RequestLike], *,
                     on_progress: OnProgress | None = None) -> int:
        """Publish every request, keeping many confirms in flight; returns how many.

        Each request is validated just before it is published. An invalid one stops the
        call: the requests before it are confirmed first, then :class:`InvalidRequest` is
        raised with its ``index`` (and ``confirmed`` equal to that index).
        """
        return self._publish_all(enumerate(requests), on_progress)

    # -- the publishing loop -------------------------------------------------------------
    def _publish_all(self, items: Iterable[tuple[int, RequestLike]],
                     on_progress: OnProgress | None) -> int:
        self.connect()
        self._call_confirmed = 0
        self._on_progress = on_progress
        try:
            for index, item in items:
                request = self._validate_at(index, item)
                self._unsent.append(send_message(self._topology, request,
                                                 self.lane_for(request)))
                if len(self._unsent) >= self._batch:
                    self._run(self._pump_ensured, self._max_in_flight - self._batch)
            self._run(self._pump_ensured, 0)
        except InvalidRequest:
            raise  # everything before it is confirmed: the producer is clean
        except BaseException:
            self._discard()
            raise
        finally:
            self._on_progress = None
        return self._call_confirmed

    def _validate_at(self, index: int, item: RequestLike) -> SendRequest:
        try:
            return validate_request(item)
        except InvalidRequest as exc:
            self._run(self._pump_ensured, 0)  # the requests before it are confirmed first
            raise InvalidRequest(exc.problems, index=index,
                                 confirmed=self._call_confirmed) from None

    def _run(self, operation: Callable[[int], None], limit: int) -> None:
        """Run an ensured operation; a connection still lost after the retries is an error."""
        try:
            operation(limit)
        except (kombu.exceptions.OperationalError, *self._conn.recoverable_connection_errors,
                *self._conn.connection_errors, *self._conn.channel_errors) as exc:
            raise PublishInterrupted(
                f"lost the connection to the broker at {self._url_redacted} and could not "
                f"re-establish it: {_reason(exc)}", confirmed=self._call_confirmed,
            ) from None

    def _pump(self, limit: int) -> None:
        """Write what is buffered, then wait until at most ``limit`` confirms are outstanding.

        Runs under kombu's ``ensure``: a connection error reconnects, calls :meth:`revive`
        and runs this again, which republishes every unconfirmed message.
        """
        try:
            self._setup()
            self._write()
            self._await(limit)
        except amqp.exceptions.ChannelError as exc:
            raise PublishError(f"the broker refused: {exc}",
                               confirmed=self._call_confirmed) from None

    def revive(self, channel: Any) -> None:
        """kombu ``ensure`` hook: the connection was re-established; ``channel`` is new."""
        self._reconnects += 1
        self._channel = channel
        self._needs_setup = True
        self._unsent[:0] = self._window.reset()
        log.warning("producer.reconnected", broker=self._url_redacted,
                    republishing=len(self._unsent))

    def _setup(self) -> None:
        if not self._needs_setup:
            return
        if self._channel is None:
            self._channel = self._conn.channel()
        channel = self._channel
        channel.events["basic_ack"].add(self._window.on_ack)
        channel.events["basic_nack"].add(self._window.on_nack)
        channel.events["basic_return"].add(self._on_return)
        channel.confirm_select()
        if self._declare:
            try:
                declare_topology(channel, self._topology)
            except amqp.exceptions.PreconditionFailed as exc:
                raise TopologyMismatch(
                    f"the broker holds an exchange or queue that conflicts with ics-sms: "
                    f"{exc}; delete it or choose another namespace"
                ) from None
        self._framer = PublishFramer(channel.channel_id, _raw_connection(channel).frame_max)
        self._needs_setup = False

    def _write(self) -> None:
        if not self._unsent:
            return
        assert self._framer is not None
        encode = self._framer.encode
        data = b"".join(encode(m.exchange, m.routing_key, m.message_id or "", m.body,
                               m.headers)
                        for m in self._unsent)
        transport = _raw_connection(self._channel).transport
        with transport.having_timeout(self._confirm_timeout_s):
            transport.write(data)
        self._window.sent(self._unsent)
        self._unsent = []

    def _await(self, limit: int) -> None:
        raw = _raw_connection(self._channel)
        deadline = time.monotonic() + self._confirm_timeout_s
        while True:
            if self._collect_progress():
                deadline = time.monotonic() + self._confirm_timeout_s
            failure = self._window.failure
            if failure is not None:
                if self._window.settled:
                    raise PublishError(failure.reason, confirmed=self._call_confirmed)
            elif len(self._window) <= limit:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(
                    f"the broker confirmed nothing for {self._confirm_timeout_s:g}s "
                    f"({len(self._window)} messages unconfirmed; is it blocked by an alarm?)",
                    confirmed=self._call_confirmed,
                )
            try:
                raw.drain_events(timeout=remaining)
            except TimeoutError:
                continue

    def _collect_progress(self) -> bool:
        count = self._window.take_confirmed()
        if not count:
            return False
        self._call_confirmed += count
        self._published += count
        if self._on_progress is not None:
            self._on_progress(self._call_confirmed)
        return True

    # -- broker callbacks and failures ---------------------------------------------------
    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        reason = (f"message {message_id} is unroutable: exchange {exchange!r} has no queue "
                  f"for routing key {routing_key!r} ({getattr(exc, 'reply_text', exc)})")
        self._window.on_return(message_id, routing_key, reason)

    def _on_connection_error(self, exc: BaseException, interval: float) -> None:
        log.warning("producer.connection_error", broker=self._url_redacted,
                    address=self._conn.as_uri(), error=_reason(exc), retry_in_s=interval)

    def _forget(self) -> None:
        self._unsent = []
        self._window.reset()
        self._channel = None
        self._framer = None
        self._needs_setup = True
        self._connected = False

    def _discard(self) -> None:
        """After an error: forget unconfirmed messages and start afresh on a new connection.

        The connection may hold a half-written frame or late confirms, so it is dropped.
        """
        self._forget()
        self._conn.collect()


def _raw_connection(channel: Any) -> Any:
    """The py-amqp connection of ``channel``; a recoverable error when it is gone."""
    raw = None if channel is None else channel.connection
    if raw is None or raw.transport is None or not raw.connected:
        raise amqp.exceptions.RecoverableConnectionError("connection closed")
    return raw


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
