"""deploy/ declares exactly the exchanges, queues and bindings the code declares.

The code's declaration is :class:`ics_sms.schemas.topology.Topology`; deploy/ names queues in the
RabbitMQ definitions (compose and Kubernetes), the KEDA triggers, the alert rules and the
dashboard. A queue deploy/ names that the code does not declare, or one it misses, fails
here with its name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import Topology
from tests.deploy.manifests import DEPLOY, K8S, find, render

CODE = Topology()


def definitions_files() -> dict[str, dict[str, Any]]:
    """Every RabbitMQ definitions document under deploy/, by where it lives."""
    files = {"deploy/rabbitmq/definitions.json":
             json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())}
    for obj in render(K8S / "overlays" / "example"):
        if obj["kind"] == "ConfigMap" and "definitions.json" in obj.get("data", {}):
            files[f"ConfigMap/{obj['metadata']['name']}"] = json.loads(
                obj["data"]["definitions.json"])
    return files


DEFINITIONS = definitions_files()


def test_both_deployments_carry_definitions() -> None:
    assert len(DEFINITIONS) == 2


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
def test_deploy_declares_every_queue_of_the_code_and_no_other(where: str) -> None:
    declared = {q["name"] for q in DEFINITIONS[where]["queues"]}
    assert declared - CODE.queue_names() == set(), "queues the code does not declare"
    assert CODE.queue_names() - declared == set(), "queues of the code missing from deploy/"


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
def test_every_queue_has_the_code_s_arguments(where: str) -> None:
    code = {q.name: q for q in CODE.queues()}
    for queue in DEFINITIONS[where]["queues"]:
        assert queue["arguments"] == code[queue["name"]].arguments, queue["name"]
        assert queue["durable"] is code[queue["name"]].durable, queue["name"]
        assert queue["auto_delete"] is False, queue["name"]


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
def test_deploy_declares_exactly_the_code_s_exchanges(where: str) -> None:
    declared = {(e["name"], e["type"], e["durable"]) for e in DEFINITIONS[where]["exchanges"]}
    assert declared == {(e.name, e.type.value, e.durable) for e in CODE.exchanges()}


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
def test_deploy_declares_exactly_the_code_s_bindings(where: str) -> None:
    declared = [(b["source"], b["destination"], b["routing_key"], b["destination_type"])
                for b in DEFINITIONS[where]["bindings"]]
    assert len(declared) == len(set(declared))
    assert set(declared) == {(b.exchange, b.queue, b.routing_key, "queue")
                             for b in CODE.bindings()}


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
def test_no_policy_overrides_what_the_arguments_say(where: str) -> None:
    argument_keys = {k.removeprefix("x-") for q in CODE.queues() for k in q.arguments}
    for policy in DEFINITIONS[where]["policies"]:
        assert not argument_keys & policy["definition"].keys(), policy["name"]


def test_keda_scales_on_exactly_the_send_queues() -> None:
    objects = render(K8S / "overlays" / "example")
    queues = [t["metadata"]["queueName"]
              for scaled in find(objects, "ScaledObject") for t in scaled["spec"]["triggers"]
              if t["type"] == "rabbitmq"]
    assert sorted(queues) == sorted(CODE.send_queue(lane) for lane in Lane)


NAME = re.compile(r"(?<![\w.-])sms\.(?:send|retry|events|dead)[a-z0-9._]*")
"""An exchange or queue name written out in a file (dotted, unescaped)."""


def names_in(text: str) -> set[str]:
    return {match.rstrip(".") for match in NAME.findall(text)}


def test_the_name_finder() -> None:
    text = 'x{queue="sms.send.service"} to sms.dead. host sms.example.com, re sms\\.retry'
    assert names_in(text) == {"sms.send.service", "sms.dead"}


def test_the_alerts_watch_the_send_and_dead_queues() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert {CODE.send_queue(lane) for lane in Lane} | {CODE.dead_queue} <= names_in(exprs)


FILES = sorted(
    [p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".json", ".toml", ".conf", ".env"}]
    + [DEPLOY.parent / "docs" / "operations.md"]
)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DEPLOY.parent)))
def test_every_name_written_in_deploy_is_declared_by_the_code(path: Path) -> None:
    declared = CODE.queue_names() | {e.name for e in CODE.exchanges()}
    assert names_in(path.read_text()) - declared == set()
