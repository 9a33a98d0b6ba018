"""An AsyncAPI 3.0 document generated from the contract models (pure; no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from contracts.catalog import COMMANDS, EVENTS
from contracts.envelope import CloudEvent
from contracts.errors import Reply
from contracts.names import Topology

__all__ = ["asyncapi_document"]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def asyncapi_document(topology: Topology | None = None) -> dict[str, Any]:
    """Describe every command, query and event; ``type`` is the routing key of each."""
    names = topology or Topology()
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add(kind: str, name: str, model: type[BaseModel]) -> dict[str, str]:
        # A command and an event may share a type string (``ca.create``): they travel
        # on different exchanges, so the document keys them by kind as well.
        key = f"{kind}.{name}"
        schema = _schema(model)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        messages[key] = {
            "name": name,
            "title": name,
            "summary": (model.__doc__ or name).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "properties": {
                            "type": {"const": name},
                            "data": {"$ref": f"#/components/schemas/{model.__name__}"},
                        }
                    },
                ]
            },
        }
        return {"$ref": f"#/components/messages/{key}"}

    envelope = _schema(CloudEvent)
    schemas.update(envelope.pop("$defs", {}))
    schemas["CloudEvent"] = envelope
    reply = _schema(Reply)
    schemas.update(reply.pop("$defs", {}))
    schemas["Reply"] = reply

    command_refs = {
        t.replace(".", "_"): add("command", t, op.request) for t, op in COMMANDS.items()
    }
    event_refs = {
        t.replace(".", "_"): add("event", t, model) for t, model in EVENTS.items()
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Lamassu PKI bus",
            "version": "1",
            "description": (
                "Commands and queries go to the commands exchange with the type as "
                "routing key and may carry reply_to + correlation_id; the answer is a "
                "Reply. Events go to the events exchange, CloudEvents 1.0 structured JSON."
            ),
        },
        "channels": {
            "commands": {
                "address": names.commands,
                "messages": command_refs,
                "bindings": {
                    "amqp": {"is": "routingKey", "exchange": {"type": "topic"}}
                },
            },
            "events": {
                "address": names.events,
                "messages": event_refs,
                "bindings": {
                    "amqp": {"is": "routingKey", "exchange": {"type": "topic"}}
                },
            },
        },
        "operations": {
            "sendCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/commands"},
            },
            "receiveEvent": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }
