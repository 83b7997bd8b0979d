"""RabbitMQ definitions generated from the topology, and the checked-in copies of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ics_sms.schemas.definitions import (
    DEFAULT_VHOST,
    definitions,
    main,
    render_configmap,
    render_json,
)
from ics_sms.schemas.topology import QueueType, Topology

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "deploy" / "rabbitmq" / "definitions.json"
CONFIGMAP_NAME = "ics-sms-rabbitmq-definitions"
CHECKED_IN_CONFIGMAP = REPO / "deploy" / "k8s" / "base" / f"{CONFIGMAP_NAME}.yaml"


# -- the checked-in files --------------------------------------------------------------------


def test_the_checked_in_definitions_are_what_the_code_generates() -> None:
    assert CHECKED_IN.read_text() == render_json(definitions()), (
        "deploy/rabbitmq/definitions.json is stale; regenerate with: "
        "python -m ics_sms.schemas.definitions > deploy/rabbitmq/definitions.json"
    )


def test_the_checked_in_configmap_is_what_the_code_generates() -> None:
    assert CHECKED_IN_CONFIGMAP.read_text() == render_configmap(definitions(), CONFIGMAP_NAME), (
        f"{CHECKED_IN_CONFIGMAP.relative_to(REPO)} is stale; regenerate with: "
        f"python -m ics_sms.schemas.definitions --configmap {CONFIGMAP_NAME} "
        f"> {CHECKED_IN_CONFIGMAP.relative_to(REPO)}"
    )


def test_the_configmap_holds_the_same_json() -> None:
    configmap = yaml.safe_load(render_configmap(definitions(), "defs", key="d.json"))
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "defs"
    assert json.loads(configmap["data"]["d.json"]) == definitions()


# -- content ---------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", [Topology(), Topology(namespace="t1."),
                                      Topology(queue_type=QueueType.CLASSIC)])
def test_definitions_mirror_the_topology(topology: Topology) -> None:
    defs = definitions(topology)
    assert {q["name"]: q["arguments"] for q in defs["queues"]} == {
        q.name: q.arguments for q in topology.queues()}
    assert [(e["name"], e["type"]) for e in defs["exchanges"]] == [
        (e.name, e.type.value) for e in topology.exchanges()]
    assert [(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]] == [
        (b.exchange, b.queue, b.routing_key) for b in topology.bindings()]


def test_everything_is_durable_and_lives_in_the_vhost() -> None:
    defs = definitions(vhost="sms")
    assert defs["vhosts"] == [{"name": "sms"}]
    for entry in [*defs["exchanges"], *defs["queues"]]:
        assert entry["vhost"] == "sms"
        assert entry["durable"] is True
        assert entry["auto_delete"] is False
    assert all(b["vhost"] == "sms" and b["destination_type"] == "queue"
               for b in defs["bindings"])
    assert not any(e["internal"] for e in defs["exchanges"])


def test_the_default_is_the_contract_in_the_default_vhost() -> None:
    defs = definitions()
    assert defs["vhosts"] == [{"name": DEFAULT_VHOST}]
    names = {q["name"] for q in defs["queues"]}
    assert {"sms.send.service", "sms.send.promotional", "sms.events", "sms.dead"} <= names
    assert all(q["arguments"]["x-queue-type"] == "quorum" for q in defs["queues"])


def test_no_users_and_no_policies() -> None:
    defs = definitions()
    assert "users" not in defs and "permissions" not in defs
    assert defs["policies"] == []


def test_numeric_arguments_stay_integers_in_json() -> None:
    queues = json.loads(render_json(definitions()))["queues"]
    for queue in queues:
        for key in ("x-message-ttl", "x-delivery-limit"):
            if key in queue["arguments"]:
                value = queue["arguments"][key]
                assert isinstance(value, int) and not isinstance(value, bool), queue["name"]


def test_arguments_are_copies() -> None:
    defs = definitions()
    defs["queues"][0]["arguments"]["x-test"] = 1
    assert all("x-test" not in q.arguments for q in Topology().queues())


def test_rendering_is_stable() -> None:
    text = render_json(definitions())
    assert text == render_json(definitions())
    assert text.endswith("}\n")
    assert json.loads(text) == definitions()


# -- the command -----------------------------------------------------------------------------


def test_main_prints_the_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == render_json(definitions())


def test_main_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--namespace", "t1.", "--queue-type", "classic", "--vhost", "v"]) == 0
    expected = definitions(Topology(namespace="t1.", queue_type=QueueType.CLASSIC), vhost="v")
    assert json.loads(capsys.readouterr().out) == expected
    assert main(["--configmap", "x"]) == 0
    assert capsys.readouterr().out == render_configmap(definitions(), "x")


def test_python_dash_m_runs_main() -> None:
    result = subprocess.run([sys.executable, "-m", "ics_sms.schemas.definitions"],
                            capture_output=True, text=True, check=True, cwd=REPO, timeout=60)
    assert result.stdout == CHECKED_IN.read_text()
