"""The public contract of every topic: which model its values follow, and that model's JSON Schema.

docs/schemas/<topic>.v<version>.json and docs/asyncapi.json (every topic as an AsyncAPI 3 channel, the same
models as its message payloads) are generated from the models (`python -m shared.runtime.cli schemas`) and a
test keeps the committed files identical to the models and validates real messages against them. The
versioning rule: a contract changes only by adding optional fields; anything else is a new topic version.

The quarantine topics (`<topic>.quarantine`) carry raw copies of messages that could not be read, whatever
their bytes: they have an AsyncAPI channel (binary payload, the headers that say where a copy came from)
and no JSON Schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import orjson
from pydantic import BaseModel

from shared.domain.events import (
    SCHEMA_VERSION,
    DeadLetter,
    ExecuteOrder,
    OrderPlaced,
    RetryOrder,
    StatusEvent,
)
from shared.messaging.kafka import CORRELATION_HEADER
from shared.messaging.quarantine import (
    ERROR_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    Reason,
)
from shared.messaging.topics import (
    ORDER_STATUS,
    ORDERS,
    ORDERS_DLQ,
    ORDERS_EXECUTE,
    ORDERS_RETRY,
    QUARANTINES,
    TopicSpec,
)

CONTRACTS: dict[TopicSpec, type[BaseModel]] = {
    ORDERS: OrderPlaced,
    ORDERS_EXECUTE: ExecuteOrder,
    ORDER_STATUS: StatusEvent,
    ORDERS_DLQ: DeadLetter,
    **dict.fromkeys(ORDERS_RETRY, RetryOrder),
}
# Which of the engine's processes read a topic back (the engine writes every topic of CONTRACTS).
READERS: dict[TopicSpec, str] = {
    ORDERS: "The router reads it: it quotes every venue and routes the order.",
    ORDERS_EXECUTE: "The executor reads it: it swaps the order on the chosen venue.",
    ORDER_STATUS: "The notifier reads it (WebSocket updates), and so may analytics consumers, each under its"
    " own consumer group (`python -m analytics`).",
    **dict.fromkeys(ORDERS_RETRY, "The router reads it and routes the order again once it is due."),
}
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_DIR = DOCS / "schemas"
ASYNCAPI_PATH = DOCS / "asyncapi.json"
KAFKA_BINDING_VERSION = "0.5.0"


def schema_for(spec: TopicSpec) -> dict[str, Any]:
    model = CONTRACTS[spec]
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:order-engine:topic:{spec.name}:v{SCHEMA_VERSION}",
        "description": f"Value of topic `{spec.name}` ({spec.purpose}); key: the orderId as UTF-8.",
        **schema,
    }


def schema_path(spec: TopicSpec, folder: Path = SCHEMA_DIR) -> Path:
    return folder / f"{spec.name}.v{SCHEMA_VERSION}.json"


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in CONTRACTS:
        path = schema_path(spec, folder)
        path.write_bytes(render(schema_for(spec)))
        written.append(path)
    return written


def channel_id(spec: TopicSpec) -> str:
    """The AsyncAPI id of a topic's channel: `orders.retry.2s` is `ordersRetry2s`."""
    first, *rest = re.split(r"[.\-_]", spec.name)
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


MESSAGE_HEADERS = {
    "type": "object",
    "properties": {
        CORRELATION_HEADER: {
            "type": "string",
            "description": "The value's `correlationId` (the HTTP request's X-Request-ID) as UTF-8; absent"
            " when it has none.",
        }
    },
}
MESSAGE_BINDINGS = {
    "kafka": {
        "key": {"type": "string", "format": "uuid", "description": "The orderId, as UTF-8."},
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
}


def asyncapi_channel(spec: TopicSpec, payload: dict[str, Any]) -> dict[str, Any]:
    """A topic's AsyncAPI channel: its one message, whose payload is `payload` (the topic's JSON Schema)."""
    name = CONTRACTS[spec].__name__
    return {
        "address": spec.name,
        "title": spec.name,
        "description": f"{spec.purpose}. Keyed by orderId: all messages of an order are in one partition,"
        " in order.",
        "messages": {
            name: {
                "name": name,
                "title": name,
                "summary": f"The value of `{spec.name}`: the model of docs/schemas/{schema_path(spec).name}.",
                "contentType": "application/json",
                "headers": MESSAGE_HEADERS,
                "payload": payload,
                "bindings": MESSAGE_BINDINGS,
            }
        },
        "bindings": {
            "kafka": {
                "topicConfiguration": {"retention.ms": spec.retention_ms},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def asyncapi_operations(spec: TopicSpec) -> dict[str, Any]:
    """What the engine does on a topic's channel: it sends on every one, and receives on those in READERS."""
    channel = channel_id(spec)
    target = {
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{CONTRACTS[spec].__name__}"}],
    }
    suffix = channel[:1].upper() + channel[1:]
    operations = {
        f"send{suffix}": {"action": "send", **target, "summary": f"The engine writes `{spec.name}`."}
    }
    if spec in READERS:
        operations[f"receive{suffix}"] = {"action": "receive", **target, "summary": READERS[spec]}
    return operations


QUARANTINED_MESSAGE = "QuarantinedMessage"
QUARANTINE_HEADERS = {
    "type": "object",
    "description": "The source message's own headers, as they came (minus any x-quarantine-* among them),"
    " then these.",
    "properties": {
        SOURCE_TOPIC_HEADER: {
            "type": "string",
            "description": "The topic it was read from (with TOPIC_PREFIX).",
        },
        SOURCE_PARTITION_HEADER: {
            "type": "string",
            "pattern": r"^\d+$",
            "description": "Its partition there.",
        },
        SOURCE_OFFSET_HEADER: {"type": "string", "pattern": r"^\d+$", "description": "Its offset there."},
        REASON_HEADER: {
            "type": "string",
            "enum": list(get_args(Reason)),
            "description": "What could not be read: the key (not the value's orderId in UTF-8), the headers"
            " (x-correlation-id not UTF-8 text), the value (not JSON), or its schema (JSON the topic's model"
            " refuses). Also the `reason` label of messages_rejected_total.",
        },
        ERROR_HEADER: {"type": "string", "description": "The first error found, in short."},
    },
    "required": [SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER, SOURCE_OFFSET_HEADER, REASON_HEADER],
}


def quarantine_channel(spec: TopicSpec, source: TopicSpec) -> dict[str, Any]:
    """The AsyncAPI channel of `source`'s quarantine `spec`: raw copies, so a binary payload and no schema."""
    return {
        "address": spec.name,
        "title": spec.name,
        "description": f"{spec.purpose}. Each is a copy of a `{source.name}` message its stage could not"
        " read, written before that stage committed past it (docs/reliability.md, Poison messages).",
        "messages": {
            QUARANTINED_MESSAGE: {
                "name": QUARANTINED_MESSAGE,
                "title": QUARANTINED_MESSAGE,
                "summary": f"A `{source.name}` message as received: its key and value byte for byte.",
                "contentType": "application/octet-stream",
                "headers": QUARANTINE_HEADERS,
                "payload": {
                    "type": "string",
                    "format": "binary",
                    "description": "The source message's value, byte for byte (maybe not JSON, maybe empty).",
                },
                "bindings": {
                    "kafka": {
                        "key": {
                            "type": "string",
                            "format": "binary",
                            "description": "The source message's key, byte for byte (maybe absent, maybe not"
                            " UTF-8).",
                        },
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
        },
        "bindings": {
            "kafka": {
                "topicConfiguration": {"retention.ms": spec.retention_ms},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def quarantine_operations(spec: TopicSpec, source: TopicSpec) -> dict[str, Any]:
    """The engine sends on a quarantine; nothing of it reads one (operators do, by hand)."""
    channel = channel_id(spec)
    return {
        f"send{channel[:1].upper()}{channel[1:]}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{QUARANTINED_MESSAGE}"}],
            "summary": f"The stage that reads `{source.name}` sets aside there what it cannot read.",
        }
    }


def asyncapi_document() -> dict[str, Any]:
    """docs/asyncapi.json: every topic of CONTRACTS as an AsyncAPI 3.0.0 channel whose message payload is
    the topic's model, as in docs/schemas (embedded; definitions that models share: components.schemas),
    and every quarantine topic as a channel of raw copies."""
    shared: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec, model in CONTRACTS.items():
        payload = model.model_json_schema(
            by_alias=True, mode="serialization", ref_template="#/components/schemas/{model}"
        )
        for name, definition in payload.pop("$defs", {}).items():
            if shared.setdefault(name, definition) != definition:
                raise ValueError(f"two contracts define {name} differently")
        channels[channel_id(spec)] = asyncapi_channel(spec, payload)
        operations |= asyncapi_operations(spec)
    for name, spec in QUARANTINES.items():
        source = next(contract for contract in CONTRACTS if contract.name == name)
        channels[channel_id(spec)] = quarantine_channel(spec, source)
        operations |= quarantine_operations(spec, source)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Order execution engine",
            "version": str(SCHEMA_VERSION),
            "description": "The Kafka topics of the order execution engine: their messages, and who writes"
            " and reads them. Every value carries `v`; a contract changes only by adding optional fields,"
            " anything else is a new topic version (docs/events.md).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "The deployment's KAFKA_BOOTSTRAP_SERVERS. Topic names take the deployment's"
                " TOPIC_PREFIX (empty by default): with TOPIC_PREFIX=prod. the channel `orders` is the topic"
                " `prod.orders`.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": shared},
    }


def write_asyncapi(path: Path = ASYNCAPI_PATH) -> Path:
    path.write_bytes(render(asyncapi_document()))
    return path
