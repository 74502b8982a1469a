"""The Postman collection a new user imports must describe the API that really runs."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.fixtures.stack import ROOT, Stack

pytestmark = pytest.mark.integration

COLLECTION = json.loads((ROOT / "postman_collection.json").read_text())


def as_template(url: str) -> str:
    path = url.replace("{{baseUrl}}", "")
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
