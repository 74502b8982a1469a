from __future__ import annotations

import pytest

from shared.contracts import CONTRACTS, render, schema_for, schema_path
from shared.topics import TopicSpec


@pytest.mark.parametrize("spec", list(CONTRACTS), ids=lambda s: s.name)
def test_committed_schemas_are_what_the_models_say(spec: TopicSpec) -> None:
    """docs/schemas is the contract analytics teams read: it must never drift from the code."""
    assert schema_path(spec).read_bytes() == render(schema_for(spec)), (
        f"{schema_path(spec).name} is stale: run `python -m shared.cli schemas`"
    )


def test_amounts_are_decimal_strings_in_the_contract() -> None:
    from shared.topics import ORDER_STATUS

    amount = schema_for(ORDER_STATUS)["properties"]["amountOut"]["anyOf"][0]
    assert amount == {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
