"""The Postman collection a new user imports must describe the API that really runs, and its tests must pass
when newman (tools/node) runs it against a live stack."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.fixtures.stack import ROOT, Stack
from tests.integration.test_contracts_tools import NODE_TOOLS, require_node_tools

pytestmark = pytest.mark.integration

COLLECTION_PATH = ROOT / "postman_collection.json"
COLLECTION = json.loads(COLLECTION_PATH.read_text())
NEWMAN = NODE_TOOLS / "node_modules" / ".bin" / "newman"


def as_template(url: str) -> str:
    path = url.replace("{{baseUrl}}", "").partition("?")[0]
    return re.sub(r"\{\{\w+\}\}", "{}", path)


async def test_every_request_in_the_collection_is_a_documented_route(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
    routes = {
        (re.sub(r"\{\w+\}", "{}", path), method.upper())
        for path, ops in spec["paths"].items()
        for method in ops
    }
    for item in COLLECTION["item"]:
        request = item["request"]
        assert (as_template(request["url"]), request["method"]) in routes, item["name"]


async def test_the_collection_runs_without_a_server_error(stack: Stack) -> None:
    variables = {v["key"]: v["value"] for v in COLLECTION["variable"]} | {"baseUrl": stack.base_url}
    async with httpx.AsyncClient() as client:
        for item in COLLECTION["item"]:
            request = item["request"]

            def fill(text: str) -> str:
                return re.sub(r"\{\{(\w+)\}\}", lambda m: variables[m.group(1)], text)

            response = await client.request(
                request["method"],
                fill(request["url"]),
                headers={h["key"]: fill(h["value"]) for h in request.get("header", [])},
                content=fill(request["body"]["raw"]) if "body" in request else None,
            )
            assert response.status_code < 500, (item["name"], response.text)
            if response.status_code == 202 and "orderId" in response.json():
                variables["orderId"] = response.json()["orderId"]
    assert variables["orderId"], "the collection's first request creates an order the GET can read"


async def test_newman_runs_the_collection_and_every_assertion_passes(stack: Stack, tmp_path: Path) -> None:
    """Top to bottom against the session's stack, as a user or CI runs it: every request gets its answer and
    every answer passes its tests (at least two a request: status code, body, headers)."""
    require_node_tools()
    report = tmp_path / "newman.json"
    newman = await asyncio.create_subprocess_exec(
        str(NEWMAN),
        "run",
        str(COLLECTION_PATH),
        "--env-var",
        f"baseUrl={stack.base_url}",
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--color",
        "off",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(newman.communicate(), timeout=120))[0].decode(errors="replace")

    assert report.exists(), output
    run = json.loads(report.read_text())["run"]
    failures = "\n".join(
        f"{f['source']['name']}: {f['error'].get('test') or f['error']['name']}: {f['error']['message']}"
        for f in run["failures"]
    )
    assert newman.returncode == 0 and not failures, f"{failures}\n{output}"
    requests = [item["name"] for item in COLLECTION["item"]]
    assert [e["item"]["name"] for e in run["executions"] if "response" in e] == requests, output
    stats = run["stats"]
    assert stats["requests"] == {"total": len(requests), "pending": 0, "failed": 0}, stats
    assert stats["assertions"]["failed"] == 0, failures
    assert stats["assertions"]["total"] >= 2 * len(requests), stats
