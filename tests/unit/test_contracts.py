from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.messaging.contracts import (
    ASYNCAPI_PATH,
    CONTRACTS,
    asyncapi_document,
    channel_id,
    render,
    schema_for,
    schema_path,
)
from shared.messaging.quarantine import (
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from shared.messaging.topics import CATALOGUE, QUARANTINES, TopicSpec


@pytest.mark.parametrize("spec", list(CONTRACTS), ids=lambda s: s.name)
def test_committed_schemas_are_what_the_models_say(spec: TopicSpec) -> None:
    """docs/schemas is the contract analytics teams read: it must never drift from the code."""
    assert schema_path(spec).read_bytes() == render(schema_for(spec)), (
        f"{schema_path(spec).name} is stale: run `python -m shared.runtime.cli schemas`"
    )


def test_amounts_are_decimal_strings_in_the_contract() -> None:
    from shared.messaging.topics import ORDER_STATUS

    amount = schema_for(ORDER_STATUS)["properties"]["amountOut"]["anyOf"][0]
    assert amount == {"type": "string", "pattern": r"^\d+(\.\d+)?$"}


def test_committed_asyncapi_document_is_what_the_models_say() -> None:
    """docs/asyncapi.json describes the same topics and models as docs/schemas: it must not drift either."""
    assert ASYNCAPI_PATH.read_bytes() == render(asyncapi_document()), (
        f"{ASYNCAPI_PATH.name} is stale: run `python -m shared.runtime.cli schemas`"
    )


def test_every_topic_of_the_catalogue_is_described() -> None:
    """What `ensure_topics` creates is what the docs describe: a JSON Schema (docs/schemas) for each topic of
    JSON values, an AsyncAPI channel for every topic, quarantines included."""
    assert set(CATALOGUE) == set(CONTRACTS) | set(QUARANTINES.values())
    assert not set(CONTRACTS) & set(QUARANTINES.values())
    for spec in CONTRACTS:
        assert schema_path(spec).exists(), spec.name
    addresses = {channel["address"] for channel in asyncapi_document()["channels"].values()}
    assert addresses == {spec.name for spec in CATALOGUE}


def test_every_topic_has_its_channel_with_its_model_as_payload() -> None:
    document = asyncapi_document()
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    for spec, model in CONTRACTS.items():
        (message,) = channels[spec.name]["messages"].values()
        assert message["payload"]["title"] == model.__name__
        assert message["payload"]["properties"].keys() == schema_for(spec)["properties"].keys()
        sends = [
            op
            for op in document["operations"].values()
            if op["action"] == "send" and op["channel"] == {"$ref": f"#/channels/{channel_id(spec)}"}
        ]
        assert len(sends) == 1, f"the engine sends on {spec.name}"


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_every_reference_resolves_inside_the_asyncapi_document() -> None:
    """Payloads point at components.schemas, operations at channels: each must exist in the document."""
    document = asyncapi_document()
    refs = set(references(document))
    assert "#/components/schemas/Quote" in refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def test_a_quarantine_channel_describes_raw_copies_and_where_they_came_from() -> None:
    document = asyncapi_document()
    for source, spec in QUARANTINES.items():
        channel = document["channels"][channel_id(spec)]
        assert channel["address"] == f"{source}.quarantine"
        (message,) = channel["messages"].values()
        assert message["contentType"] == "application/octet-stream"
        assert message["payload"]["format"] == "binary"
        assert set(message["headers"]["required"]) == {
            SOURCE_TOPIC_HEADER,
            SOURCE_PARTITION_HEADER,
            SOURCE_OFFSET_HEADER,
            REASON_HEADER,
        }
        assert message["headers"]["properties"][REASON_HEADER]["enum"] == [
            "key",
            "headers",
            "value",
            "schema",
        ]
        actions = [
            op["action"]
            for op in document["operations"].values()
            if op["channel"] == {"$ref": f"#/channels/{channel_id(spec)}"}
        ]
        assert actions == ["send"], "the stage writes it; nothing of the engine reads it"
