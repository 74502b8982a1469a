"""The published AsyncAPI document passes the AsyncAPI project's own parser (tools/node, installed by
`make node-tools`, which `make test` runs), and the check fails on a broken document."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.messaging.contracts import ASYNCAPI_PATH, channel_id
from shared.messaging.topics import CATALOGUE, ORDERS
from tests.fixtures.stack import ROOT

pytestmark = pytest.mark.integration

NODE_TOOLS = ROOT / "tools" / "node"
CHECK_ASYNCAPI = NODE_TOOLS / "check-asyncapi.mjs"


def require_node_tools() -> None:
    """Fail (not skip) when Node or tools/node's packages are missing: CI must run these checks."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: install Node 20")
    if not (NODE_TOOLS / "node_modules" / ".package-lock.json").exists():
        pytest.fail("tools/node's packages are not installed: run `make node-tools` (`make test` does)")


def check_asyncapi(*args: str) -> subprocess.CompletedProcess[str]:
    require_node_tools()
    return subprocess.run(
        ["node", str(CHECK_ASYNCAPI), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_committed_asyncapi_document_parses() -> None:
    result = check_asyncapi()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f", {len(CATALOGUE)} channels," in result.stdout, result.stdout


def without_asyncapi_field(document: dict[str, Any]) -> None:
    del document["asyncapi"]


def payload_not_a_schema(document: dict[str, Any]) -> None:
    (message,) = document["channels"][channel_id(ORDERS)]["messages"].values()
    message["payload"] = "an OrderPlaced"


def dangling_schema_reference(document: dict[str, Any]) -> None:
    del document["components"]["schemas"]["Quote"]


@pytest.mark.parametrize(
    "breakage",
    [without_asyncapi_field, payload_not_a_schema, dangling_schema_reference],
    ids=lambda f: f.__name__,
)
def test_the_check_fails_on_a_broken_document(
    breakage: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    document = json.loads(ASYNCAPI_PATH.read_text())
    breakage(document)
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(document))

    result = check_asyncapi(str(broken))

    assert result.returncode != 0, result.stdout
    assert "Error" in result.stderr and "invalid AsyncAPI document" in result.stderr, result.stderr
