"""Publish the contract: JSON Schema of both messages and an AsyncAPI 3.0 document.

Everything is generated from the pydantic models and :class:`~ics_sms.schemas.topology.Topology`,
so the published contract cannot drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ics_sms.schemas.messages import SCHEMA_VERSION, ReceiptEvent, SendRequest, Status
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import Exchange, Queue, Topology

__all__ = ["asyncapi_document", "export", "json_schemas"]

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{title: schema}`` for every message on the wire."""
    result = {}
    for model in (SendRequest, ReceiptEvent):
        schema = model.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
        schema["$schema"] = _JSON_SCHEMA_DIALECT
        schema["$id"] = f"urn:ics-sms:schema:{model.__name__}:v{SCHEMA_VERSION}"
        result[model.__name__] = schema
    return result


def _exchange_binding(exchange: Exchange) -> dict[str, Any]:
    return {"amqp": {"is": "routingKey", "exchange": {
        "name": exchange.name, "type": exchange.type.value, "durable": exchange.durable,
        "autoDelete": False, "vhost": "/"}, "bindingVersion": "0.3.0"}}


def _queue_binding(queue: Queue) -> dict[str, Any]:
    return {"amqp": {"is": "queue", "queue": {
        "name": queue.name, "durable": queue.durable, "exclusive": False, "autoDelete": False,
        "vhost": "/"}, "bindingVersion": "0.3.0"}}


def asyncapi_document(topology: Topology | None = None) -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the exchanges, queues and messages."""
    topo = topology or Topology()
    schemas = json_schemas()
    components_schemas: dict[str, Any] = {}
    for name, schema in schemas.items():
        defs = schema.pop("$defs", {})
        components_schemas.update(defs)
        schema.pop("$schema", None)
        components_schemas[name] = schema
    text = json.dumps(components_schemas).replace("#/$defs/", "#/components/schemas/")
    components_schemas = json.loads(text)

    exchanges = {e.name: e for e in topo.exchanges()}
    queues = {q.name: q for q in topo.queues()}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for lane in Lane:
        key = f"send_{lane.value}"
        channels[key] = {
            "address": topo.send_routing_key(lane),
            "description": f"Send requests of the {lane.value} lane, exchange "
                           f"{topo.send_exchange}, queue {topo.send_queue(lane)}.",
            "messages": {"SendRequest": {"$ref": "#/components/messages/SendRequest"}},
            "bindings": _exchange_binding(exchanges[topo.send_exchange]),
        }
        operations[f"publish_{key}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{key}"},
            "summary": "A campaign engine publishes a send request (persistent, JSON).",
        }
        queue_key = f"queue_send_{lane.value}"
        channels[queue_key] = {
            "address": topo.send_queue(lane),
            "messages": {"SendRequest": {"$ref": "#/components/messages/SendRequest"}},
            "bindings": _queue_binding(queues[topo.send_queue(lane)]),
        }
        operations[f"consume_{queue_key}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{queue_key}"},
            "summary": "Workers consume send requests and submit them to ICS.",
        }
    for status in Status:
        key = f"event_{status.value}"
        channels[key] = {
            "address": status.routing_key,
            "description": f"'{status.value}' receipt events on exchange {topo.events_exchange}.",
            "messages": {"ReceiptEvent": {"$ref": "#/components/messages/ReceiptEvent"}},
            "bindings": _exchange_binding(exchanges[topo.events_exchange]),
        }
        operations[f"publish_{key}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Workers and the receiver publish '{status.value}' events.",
        }
    channels["events_queue"] = {
        "address": topo.events_queue,
        "description": "Durable queue bound to '#': the default analytics consumer reads here.",
        "messages": {"ReceiptEvent": {"$ref": "#/components/messages/ReceiptEvent"}},
        "bindings": _queue_binding(queues[topo.events_queue]),
    }
    operations["consume_events_queue"] = {
        "action": "receive", "channel": {"$ref": "#/channels/events_queue"},
        "summary": "Analytics consumers read receipt events.",
    }
    channels["dead_letters"] = {
        "address": topo.dead_queue,
        "description": "Messages that could not be processed; the reason is in the "
                       "x-ics-reason / x-ics-error headers (or x-death for broker limits).",
        "bindings": _queue_binding(queues[topo.dead_queue]),
    }
    messages = {
        name: {
            "name": name, "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        for name in schemas
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ics-sms",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Queue-based SMS connector for the ICS gateway: send requests in, "
                           "receipt events out.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components_schemas, "messages": messages},
    }


def export(directory: Path, topology: Topology | None = None) -> list[Path]:
    """Write the JSON Schemas and the AsyncAPI document into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(topology), indent=2) + "\n")
    written.append(path)
    return written
