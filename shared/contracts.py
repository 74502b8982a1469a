"""The public contract of every topic: which model its values follow, and that model's JSON Schema.

docs/schemas/<topic>.v<version>.json are generated from the models (`python -m shared.cli schemas`) and a
test keeps the committed files identical to the models and validates real messages against them. The
versioning rule: a contract changes only by adding optional fields; anything else is a new topic version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from shared.events import SCHEMA_VERSION, DeadLetter, ExecuteOrder, OrderPlaced, RetryOrder, StatusEvent
from shared.topics import ORDER_STATUS, ORDERS, ORDERS_DLQ, ORDERS_EXECUTE, ORDERS_RETRY, TopicSpec

CONTRACTS: dict[TopicSpec, type[BaseModel]] = {
    ORDERS: OrderPlaced,
    ORDERS_EXECUTE: ExecuteOrder,
    ORDER_STATUS: StatusEvent,
    ORDERS_DLQ: DeadLetter,
    **dict.fromkeys(ORDERS_RETRY, RetryOrder),
}
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


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
