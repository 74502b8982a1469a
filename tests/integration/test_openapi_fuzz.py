"""Schemathesis against the ingress's published /openapi.json (through the proxy): generated requests,
valid (positive) and invalid (negative), never get a 5xx, and every response matches the schema (status
codes, content types, bodies, the error envelope included). At least 1,000 cases in all."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.stack import Stack

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {"POST /api/orders/execute": 400, "GET /api/orders/{order_id}": 120}


def test_generated_requests_get_no_5xx_and_schema_conformant_answers(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    ran: Counter[str] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the published schema is invalid: {result}"
        operation = result.ok()
        fuzz(operation, GenerationMode.POSITIVE, ran)
        if operation.label in EXAMPLES:  # /health and /ready take no input to get wrong
            fuzz(operation, GenerationMode.NEGATIVE, ran)
    assert sum(ran.values()) >= 1000, ran


def fuzz(operation: Any, mode: GenerationMode, ran: Counter[str]) -> None:
    label = f"{operation.label} ({mode.value})"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES.get(operation.label, 10),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        ran[label] += 1
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()
