"""RabbitMQ definitions generated from :class:`~ics_sms.schemas.topology.Topology`.

The output is the JSON that ``rabbitmqctl import_definitions``, the management API's
``POST /api/definitions`` and the ``load_definitions`` setting read at node boot: the
vhost, every exchange, queue (with its arguments) and binding ics-sms uses. The copy under
``deploy/`` is generated, never edited by hand::

    python -m ics_sms.schemas.definitions > deploy/rabbitmq/definitions.json
    python -m ics_sms.schemas.definitions --configmap ics-sms-rabbitmq-definitions \\
        > deploy/k8s/base/ics-sms-rabbitmq-definitions.yaml

What is deliberately left out:

* **Users and permissions.** They hold secrets and differ per site; a site adds them in a
  second file of the same ``load_definitions`` directory (see ``docs/operations.md``).
  RabbitMQ seeds no default user when definitions are loaded at boot, so that second file
  is required there.
* **Policies.** Every limit the code relies on (delivery limit, dead-lettering, overflow,
  TTL) is a queue argument, and arguments win over policies, so a policy could only add
  behaviour the code does not expect. The two unbounded queues, ``sms.events`` and
  ``sms.dead``, stay unbounded on purpose: ``drop-head`` would lose receipts silently and
  ``reject-publish`` would push an idle analytics consumer's backlog back into the
  receiver and the workers. Their growth is watched by alerts instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TypedDict

from ics_sms.schemas.topology import QueueType, Topology

__all__ = [
    "DEFAULT_VHOST",
    "BindingDefinition",
    "Definitions",
    "ExchangeDefinition",
    "PolicyDefinition",
    "QueueDefinition",
    "VhostDefinition",
    "definitions",
    "main",
    "render_configmap",
    "render_json",
]

DEFAULT_VHOST = "/"

PolicyDefinition = TypedDict(
    "PolicyDefinition",
    {
        "vhost": str,
        "name": str,
        "pattern": str,
        "apply-to": str,
        "definition": dict[str, Any],
        "priority": int,
    },
)
"""A policy entry (``apply-to`` is not a Python identifier, hence the functional form)."""


class VhostDefinition(TypedDict):
    name: str


class ExchangeDefinition(TypedDict):
    name: str
    vhost: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


class QueueDefinition(TypedDict):
    name: str
    vhost: str
    durable: bool
    auto_delete: bool
    arguments: dict[str, Any]


class BindingDefinition(TypedDict):
    source: str
    vhost: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: dict[str, Any]


class Definitions(TypedDict):
    vhosts: list[VhostDefinition]
    exchanges: list[ExchangeDefinition]
    queues: list[QueueDefinition]
    bindings: list[BindingDefinition]
    policies: list[PolicyDefinition]


def definitions(topology: Topology | None = None, *, vhost: str = DEFAULT_VHOST) -> Definitions:
    """The definitions of ``topology`` (the contract's names by default) in ``vhost``."""
    topo = topology if topology is not None else Topology()
    return Definitions(
        vhosts=[VhostDefinition(name=vhost)],
        exchanges=[
            ExchangeDefinition(
                name=exchange.name,
                vhost=vhost,
                type=exchange.type.value,
                durable=exchange.durable,
                auto_delete=False,
                internal=False,
                arguments={},
            )
            for exchange in topo.exchanges()
        ],
        queues=[
            QueueDefinition(
                name=queue.name,
                vhost=vhost,
                durable=queue.durable,
                auto_delete=False,
                arguments=dict(queue.arguments),
            )
            for queue in topo.queues()
        ],
        bindings=[
            BindingDefinition(
                source=binding.exchange,
                vhost=vhost,
                destination=binding.queue,
                destination_type="queue",
                routing_key=binding.routing_key,
                arguments={},
            )
            for binding in topo.bindings()
        ],
        policies=[],
    )


def render_json(defs: Definitions) -> str:
    """Stable text of ``defs``: sorted keys, two-space indent, a final newline."""
    return json.dumps(defs, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_configmap(defs: Definitions, name: str, *, key: str = "definitions.json") -> str:
    """A Kubernetes ConfigMap (YAML) holding ``defs`` under ``key``, for mounting as a file."""
    body = "".join(f"    {line}\n" if line else "\n" for line in render_json(defs).splitlines())
    return (
        "# Generated from schemas/topology.py; do not edit. Regenerate with:\n"
        f"#   python -m ics_sms.schemas.definitions --configmap {name} "
        f"> deploy/k8s/base/{name}.yaml\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: ics-sms\n"
        "    app.kubernetes.io/component: rabbitmq-definitions\n"
        "data:\n"
        f"  {key}: |\n"
        f"{body}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ics_sms.schemas.definitions",
        description="Print RabbitMQ definitions (JSON) generated from the ics-sms topology.",
    )
    parser.add_argument("--namespace", default="", help="Prefix of every name (default none).")
    parser.add_argument(
        "--queue-type",
        choices=[t.value for t in QueueType],
        default=QueueType.QUORUM.value,
        help="Queue type (default quorum).",
    )
    parser.add_argument("--vhost", default=DEFAULT_VHOST, help="Virtual host (default /).")
    parser.add_argument(
        "--configmap",
        metavar="NAME",
        help="Print a Kubernetes ConfigMap named NAME holding the JSON instead.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    topology = Topology(namespace=args.namespace, queue_type=QueueType(args.queue_type))
    defs = definitions(topology, vhost=args.vhost)
    text = render_json(defs) if args.configmap is None else render_configmap(defs, args.configmap)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
