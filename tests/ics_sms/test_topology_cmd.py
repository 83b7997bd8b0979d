"""``ics-sms topology``: declare the exchanges and queues on a real RabbitMQ."""

from __future__ import annotations

import socket

import pika
import pytest
from click.testing import CliRunner, Result

from ics_sms.cli.main import cli
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology

PASSWORD = "hunter2-broker-pw"


pytestmark = pytest.mark.usefixtures("isolated_logging")


def topology_cmd(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, ["topology", *args], env={"ICS_SMS_LOG_FORMAT": "json", **env})


@pytest.fixture
def broker_env(amqp_settings: Settings) -> dict[str, str]:
    """Environment of a command that talks to the test broker in the test's namespace."""
    return {
        "ICS_SMS_BROKER_URL": amqp_settings.broker_url.get_secret_value(),
        "ICS_SMS_NAMESPACE": amqp_settings.namespace,
        "ICS_SMS_CONNECT_RETRY_S": "5",
    }


def existing_queues(url: str, names: set[str]) -> set[str]:
    """Which of ``names`` exist on the broker (passive declare, one channel per probe)."""
    found = set()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in names:
            channel = connection.channel()
            try:
                channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                continue
            found.add(name)
            channel.close()
    finally:
        connection.close()
    return found


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_topology_declares_everything(
    broker_env: dict[str, str], topology: Topology, rabbitmq_url: str
) -> None:
    result = topology_cmd(**broker_env)
    assert result.exit_code == 0, result.output
    for queue in topology.queue_names():
        assert f"declared queue    {queue} (quorum)" in result.stdout
    for exchange in topology.exchanges():
        assert f"declared exchange {exchange.name} ({exchange.type.value})" in result.stdout
    assert existing_queues(rabbitmq_url, topology.queue_names()) == topology.queue_names()


def test_topology_twice_gives_the_same_result(
    broker_env: dict[str, str], topology: Topology, rabbitmq_url: str
) -> None:
    first = topology_cmd(**broker_env)
    second = topology_cmd(**broker_env)
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert first.stdout == second.stdout
    assert existing_queues(rabbitmq_url, topology.queue_names()) == topology.queue_names()


def test_a_conflicting_queue_is_a_one_line_error(
    broker_env: dict[str, str], topology: Topology, rabbitmq_url: str
) -> None:
    clash = topology.send_queue(Lane.PROMOTIONAL)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        connection.channel().queue_declare(clash, durable=True)  # a classic queue
    finally:
        connection.close()
    line = one_line_error(topology_cmd(**broker_env))
    assert "conflicts with ics-sms" in line
    assert clash in line
    assert "ICS_SMS_NAMESPACE" in line  # what the operator can do about it


def test_print_only_needs_no_broker() -> None:
    result = topology_cmd("--print", ICS_SMS_BROKER_URL="amqp://guest:guest@127.0.0.1:1/",
                          ICS_SMS_NAMESPACE="dry.")
    assert result.exit_code == 0, result.output
    assert "would declare queue    dry.sms.send.service (quorum)" in result.stdout
    assert "would declare binding  dry.sms.send -[service]-> dry.sms.send.service" in (
        result.stdout
    )
    assert "declared" not in result.stdout.replace("would declare", "")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_broker_is_one_line_with_the_password_redacted() -> None:
    result = topology_cmd(
        ICS_SMS_BROKER_URL=f"amqp://guest:{PASSWORD}@127.0.0.1:{_closed_port()}/",
        ICS_SMS_CONNECT_RETRY_S="0",
    )
    line = one_line_error(result)
    assert result.stderr.strip() == line
    assert "unreachable" in line
    assert "guest:***@127.0.0.1" in line
    assert PASSWORD not in result.output


def test_retries_against_an_unreachable_broker_never_show_the_password() -> None:
    result = topology_cmd(
        ICS_SMS_BROKER_URL=f"amqp://guest:{PASSWORD}@127.0.0.1:{_closed_port()}/",
        ICS_SMS_CONNECT_RETRY_S="1",
    )
    line = one_line_error(result)
    assert "unreachable after 1s" in line
    assert PASSWORD not in result.output
