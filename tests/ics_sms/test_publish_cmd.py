"""``ics-sms publish FILE`` on real RabbitMQ: check first, publish confirmed, one-line errors."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from ics_sms.broker.admin import declare_topology
from ics_sms.cli.publish_cmd import publish_command
from ics_sms.schemas.senders import Lane, Sender, Senders, save_senders
from ics_sms.schemas.settings import Settings
from ics_sms.schemas.topology import Topology

NUMBER = "+447700900123"
INDIA = "+919812345678"
PEID = "1201159100000000000"
SENDERS = (
    Senders()
    .add(Sender(name="acme-otp", type="service_implicit", sender_id="ACMEIN", username="acme",
                token=SecretStr("service-token-123"), dlt_entity_id=PEID))
    .add(Sender(name="acme-promo", type="promotional", sender_id="123456", username="acme",
                token=SecretStr("promo-token-1234")))
    .add(Sender(name="acme-off", type="service_implicit", sender_id="ACMEOF", username="acme",
                token_env="T", dlt_entity_id=PEID, disabled="contract ended"))
)
ALWAYS_OPEN = {"ICS_SMS_PROMO_WINDOW_START": "00:00", "ICS_SMS_PROMO_WINDOW_END": "00:00"}


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "ICS_SMS_BROKER_URL": settings.broker_url.get_secret_value(),
        "ICS_SMS_NAMESPACE": settings.namespace,
        "ICS_SMS_SENDERS_FILE": str(settings.senders_file),
        "ICS_SMS_CONNECT_RETRY_S": "0",
        **extra,
    }


def run(settings: Settings, *args: str | Path, **extra_env: str) -> Result:
    return CliRunner().invoke(publish_command, [str(a) for a in args],
                              env=env_of(settings, **{**ALWAYS_OPEN, **extra_env}))


def drain(url: str, queue: str) -> list[tuple[Any, dict[str, Any]]]:
    """Every message in ``queue`` as (properties, body), taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        got = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, json.loads(body)))
    finally:
        connection.close()


def ids(url: str, topology: Topology, lane: Lane) -> list[str]:
    return [body["message_id"] for _, body in drain(url, topology.send_queue(lane))]


def line_of(message_id: str, campaign: str) -> int:
    """The line of a derived id ``<campaign>-<16 hex digits>-<line>``."""
    found = re.fullmatch(rf"{re.escape(campaign)}-[0-9a-f]{{16}}-(\d+)", message_id)
    assert found, message_id
    return int(found[1])


def one_line_error(result: Result) -> str:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def settings(amqp_settings: Settings) -> Settings:
    save_senders(amqp_settings.senders_file, SENDERS)
    return amqp_settings


# -- publishing ----------------------------------------------------------------------------
def test_publishes_a_csv_into_the_lanes(settings: Settings, rabbitmq_url: str,
                                        topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "spring.csv"
    path.write_text(f"to,text,sender,metadata.customer\n{NUMBER},Hi,acme-promo,c-1\n"
                    f"{NUMBER},Your OTP is 1234,,c-2\n{NUMBER},Sale!,acme-promo,c-3\n")

    result = run(settings, path, "--campaign-id", "spring")

    assert result.exit_code == 0, result.output
    promotional = ids(rabbitmq_url, topology, Lane.PROMOTIONAL)
    assert [line_of(i, "spring") for i in promotional] == [2, 4]
    [(properties, body)] = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert properties.delivery_mode == 2 and properties.content_type == "application/json"
    assert properties.message_id == body["message_id"] and line_of(body["message_id"],
                                                                   "spring") == 3
    assert body["metadata"] == {"customer": "c-2"} and body["campaign_id"] == "spring"
    assert "published 3 message(s) (service 1, promotional 2)" in result.stdout
    assert "msgs/s" in result.stdout


def test_publishes_json_lines_with_defaults(settings: Settings, rabbitmq_url: str,
                                           topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_text(json.dumps({"to": NUMBER}) + "\n"
                    + json.dumps({"to": NUMBER, "message_id": "own", "text": "Mine"}) + "\n")

    result = run(settings, path, "--campaign-id", "c9", "--text", "Default",
                 "--sender", "acme-promo", "--dlt-template-id", "1207")

    assert result.exit_code == 0, result.output
    got = drain(rabbitmq_url, topology.send_queue(Lane.PROMOTIONAL))
    assert [(b["text"], b["dlt_template_id"]) for _, b in got] == [
        ("Default", "1207"), ("Mine", "1207")]
    assert line_of(got[0][1]["message_id"], "c9") == 1 and got[1][1]["message_id"] == "own"


def test_publishing_a_file_three_times_gives_the_same_ids(
        settings: Settings, rabbitmq_url: str, topology: Topology, tmp_path: Path) -> None:
    """The workers send each message id once: three runs are one campaign, not three."""
    path = tmp_path / "c.csv"
    path.write_text("to,text\n" + f"{NUMBER},Hi\n" * 3)

    runs = []
    for _ in range(3):
        assert run(settings, path, "--campaign-id", "c").exit_code == 0
        runs.append(ids(rabbitmq_url, topology, Lane.SERVICE))

    assert runs[0] == runs[1] == runs[2]
    assert [line_of(i, "c") for i in runs[0]] == [2, 3, 4]


def test_two_files_under_one_campaign_id_give_disjoint_ids(
        settings: Settings, rabbitmq_url: str, topology: Topology, tmp_path: Path) -> None:
    """Their rows are other people on the same lines: sharing an id would share an smsgid."""
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("to,text\n+447700900170,Hi\n+447700900171,Hi\n")
    two.write_text("to,text\n+447700900172,Hi\n+447700900173,Hi\n")

    assert run(settings, one, "--campaign-id", "spring").exit_code == 0
    first = ids(rabbitmq_url, topology, Lane.SERVICE)
    assert run(settings, two, "--campaign-id", "spring").exit_code == 0
    second = ids(rabbitmq_url, topology, Lane.SERVICE)

    assert len(first) == len(second) == 2
    assert not set(first) & set(second)


def test_plain_output_when_not_a_terminal(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("to,text\n" + f"{NUMBER},Hi\n" * 10)

    result = run(settings, path, "--campaign-id", "c")

    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output and "\r" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"checked {path}: 10 rows, 10 valid, 0 invalid")
    assert lines[1].startswith("publishing 10 message(s) to amqp://")
    assert lines[-1].startswith("published 10 message(s) (service 10, promotional 0) in ")


# -- invalid rows --------------------------------------------------------------------------
def test_invalid_rows_abort_and_nothing_is_published(settings: Settings, rabbitmq_url: str,
                                                     topology: Topology, tmp_path: Path) -> None:
    declare_topology(rabbitmq_url, topology)
    path = tmp_path / "c.csv"
    path.write_text(f"to,text\n{NUMBER},Hi\n12345,Hi\n{NUMBER},\n")

    result = run(settings, path, "--campaign-id", "c")

    assert result.exit_code == 1
    problems = result.stderr.splitlines()
    assert problems[0].startswith(f"{path}:3: to: ")
    assert problems[1] == f"{path}:4: text: Field required"
    assert problems[2] == (f"Error: {path}: 2 invalid row(s); nothing published (fix them, "
                           "or publish the valid rows with --skip-invalid)")
    assert ids(rabbitmq_url, topology, Lane.SERVICE) == []


def test_skip_invalid_publishes_the_valid_rows(settings: Settings, rabbitmq_url: str,
                                              topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text\n{NUMBER},Hi\n12345,Hi\n{NUMBER},Again\n")

    result = run(settings, path, "--campaign-id", "c", "--skip-invalid")

    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{path}:3: to: ")
    assert "skipped 1 invalid row(s)" in result.stdout
    assert [line_of(i, "c") for i in ids(rabbitmq_url, topology, Lane.SERVICE)] == [2, 4]


def test_a_repeated_message_id_stops_the_file(settings: Settings, rabbitmq_url: str,
                                              topology: Topology, tmp_path: Path) -> None:
    declare_topology(rabbitmq_url, topology)
    path = tmp_path / "c.csv"
    path.write_text(f"message_id,to,text\nm-1,{NUMBER},Hi\nm-2,{NUMBER},Hi\n"
                    f"m-1,{NUMBER},Other\n")

    result = run(settings, path, "--campaign-id", "c")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"{path}:4: message_id: duplicate of line 2"
    assert ids(rabbitmq_url, topology, Lane.SERVICE) == []


def test_skip_invalid_publishes_the_first_row_of_a_repeated_id(
        settings: Settings, rabbitmq_url: str, topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"message_id,to,text\nm-1,{NUMBER},Hi\nm-2,{NUMBER},Hi\n"
                    f"m-1,{NUMBER},Other\nm-2,{NUMBER},Again\n")

    result = run(settings, path, "--campaign-id", "c", "--skip-invalid")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"{path}:4: message_id: duplicate of line 2",
                                          f"{path}:5: message_id: duplicate of line 3"]
    assert "skipped 2 invalid row(s)" in result.stdout
    got = drain(rabbitmq_url, topology.send_queue(Lane.SERVICE))
    assert [(b["message_id"], b["text"]) for _, b in got] == [("m-1", "Hi"), ("m-2", "Hi")]


def test_the_list_of_problems_is_capped(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("to,text\n" + "bad,Hi\n" * 25)

    result = run(settings, path, "--campaign-id", "c")

    assert result.exit_code == 1
    assert result.stderr.count(": to: ") == 20
    assert "... and 5 more invalid row(s)" in result.stderr


def test_dry_run_checks_only_and_never_connects(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text,sender\n{NUMBER},Hi,acme-promo\n{NUMBER},Hi,acme-otp\n")

    result = run(settings, path, "--campaign-id", "c", "--dry-run",
                 ICS_SMS_BROKER_URL="amqp://guest:guest@127.0.0.1:1/")

    assert result.exit_code == 0, result.output
    assert ("dry run: 2 message(s) would be published (service 1, promotional 1); "
            "nothing was sent") in result.stdout


# -- what the workers would refuse, refused first ------------------------------------------
def test_rows_the_workers_would_refuse_are_row_errors(settings: Settings, rabbitmq_url: str,
                                                      topology: Topology,
                                                      tmp_path: Path) -> None:
    declare_topology(rabbitmq_url, topology)
    path = tmp_path / "c.csv"
    path.write_text("to,text,sender,dlt_template_id\n"
                    f"{INDIA},Hi,acme-otp,1207\n"      # 2: fine
                    f"{INDIA},Hi,acme-otp,\n"          # 3: no template
                    f"{INDIA},Hi,acme-promo,1207\n"    # 4: sender without entity id
                    f"{NUMBER},Hi,nobody,\n"           # 5: unknown sender
                    f"{NUMBER},Hi,acme-off,\n")        # 6: disabled

    result = run(settings, path, "--campaign-id", "c", "--dry-run")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}:3: dlt_template_id: required for +91 numbers",
        f"{path}:4: sender: 'acme-promo' has no DLT entity id, required for +91 numbers",
        f"{path}:5: sender: no sender named 'nobody' (known: acme-off, acme-otp, acme-promo)",
        f"{path}:6: sender: 'acme-off' is disabled (contract ended): the workers do not send "
        "its messages while it is disabled",
        f"Error: {path}: 4 invalid row(s); nothing published (fix them, or publish the "
        "valid rows with --skip-invalid)",
    ]
    assert ids(rabbitmq_url, topology, Lane.SERVICE) == []


def test_the_default_sender_is_checked_too(settings: Settings, tmp_path: Path) -> None:
    save_senders(settings.senders_file, Senders().add(
        Sender(name="plain", type="transactional", sender_id="ACMEBK", username="u",
               token_env="T")))
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"to": INDIA, "text": "Hi", "dlt_template_id": "1207"}) + "\n")

    result = run(settings, path, "--campaign-id", "c", "--dry-run")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{path}:1: sender: 'plain' has no DLT entity id, required for +91 numbers")


def test_skip_invalid_never_publishes_a_row_the_workers_would_refuse(
        settings: Settings, rabbitmq_url: str, topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text,sender\n{NUMBER},Hi,acme-otp\n{NUMBER},Hi,acme-off\n"
                    f"{INDIA},Hi,acme-otp\n{NUMBER},Again,acme-otp\n")

    result = run(settings, path, "--campaign-id", "c", "--skip-invalid")

    assert result.exit_code == 0, result.output
    assert "skipped 2 invalid row(s)" in result.stdout
    assert [line_of(i, "c") for i in ids(rabbitmq_url, topology, Lane.SERVICE)] == [2, 5]


def test_promotional_rows_outside_the_window_are_a_warning(settings: Settings,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text,sender\n{NUMBER},Sale,acme-promo\n{NUMBER},Sale,acme-promo\n"
                    f"{NUMBER},OTP,acme-otp\n")
    now = datetime.now(UTC)
    closed = {"ICS_SMS_PROMO_TIMEZONE": "UTC",
              "ICS_SMS_PROMO_WINDOW_START": f"{now + timedelta(hours=1):%H:%M}",
              "ICS_SMS_PROMO_WINDOW_END": f"{now + timedelta(hours=2):%H:%M}"}

    result = run(settings, path, "--campaign-id", "c", "--dry-run", **closed)

    assert result.exit_code == 0, result.output
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: 2 message(s) of promotional sender 'acme-promo': the "
                              "promotional window (")
    assert "the workers hold them until it opens at " in warning
    assert "would be published (service 1, promotional 2)" in result.stdout


# -- one-line errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("missing.csv", None, "missing.csv: no such file"),
        ("latin1.csv", "to,text\n+919812345678,caf\u00e9\n".encode("latin-1"),
         "latin1.csv:2: not UTF-8 text"),
        ("nohead.csv", b"number,text\n+919812345678,Hi\n", "unknown column(s) 'number'"),
        ("notext.csv", b"to\n+919812345678\n", "the header has no column(s) text"),
        ("c.txt", b"to,text\n", "cannot tell the format from the extension '.txt'"),
    ],
)
def test_unusable_files_are_one_line_errors(settings: Settings, tmp_path: Path, name: str,
                                            content: bytes | None, error: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    line = one_line_error(run(settings, path, "--campaign-id", "c"))

    assert line.startswith("Error: ") and error in line


def test_unreachable_broker_is_one_line_without_the_password(settings: Settings,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text\n{NUMBER},Hi\n")

    result = run(settings, path, "--campaign-id", "c",
                 ICS_SMS_BROKER_URL="amqp://guest:s3cret@127.0.0.1:1/")

    line = one_line_error(result)
    assert "cannot connect to the broker at amqp://guest:***@127.0.0.1:1/" in line
    assert "s3cret" not in result.output


def test_memory_broker_is_refused_in_one_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"to,text\n{NUMBER},Hi\n")

    line = one_line_error(run(settings, path, "--campaign-id", "c",
                              ICS_SMS_BROKER_URL="memory://"))

    assert "amqp:// or amqps://, not memory://" in line
