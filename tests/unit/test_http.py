"""shared/web/ pieces that need no server: the client's address behind (un)trusted proxies, and the edge
middleware and direct routes driven in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_network
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from shared.web.app import DirectRoute
from shared.web.edge import CorsPolicy, HttpEdgeMiddleware, client_address
from shared.web.envelope import install_error_handlers

TRUSTED = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")]


def request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("203.0.113.9", None, "203.0.113.9"),  # no proxy
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's X-Forwarded-For is ignored
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),  # the local proxy says who the client is
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client prepended is not believed
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # a chain of trusted proxies
        ("127.0.0.1", None, "127.0.0.1"),  # the proxy itself
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "10.0.0.5", "10.0.0.5"),  # only proxies in the chain: the first hop
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(request(peer, forwarded), TRUSTED) == expected


def edge_app(*, cors: CorsPolicy | None = None) -> FastAPI:
    """A small app behind HttpEdgeMiddleware: limits of 64 body bytes and 512 header bytes."""
    app = FastAPI()
    app.add_middleware(HttpEdgeMiddleware, max_body_bytes=64, max_header_bytes=512, cors=cors)
    install_error_handlers(app)

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, headers={"vary": "Accept"} if body == b"vary" else None)

    app.router.add_api_route("/echo", echo, methods=["POST"], route_class_override=DirectRoute)
    return app


CORS = CorsPolicy(
    allow_origins=["http://app.example"],
    allow_methods=["GET", "POST"],
    allow_headers=["Content-Type"],
    expose_headers=["X-Request-ID"],
)


async def call(app: FastAPI, method: str = "POST", **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, "/echo", **kw)


async def test_the_edge_keeps_a_good_request_id_replaces_a_bad_one_and_adds_security_headers() -> None:
    kept = await call(edge_app(), headers={"X-Request-ID": "req-1"}, content=b"hi")
    replaced = await call(edge_app(), headers={"X-Request-ID": "bad id"})
    assert kept.status_code == 200 and kept.text == "hi" and kept.headers["x-request-id"] == "req-1"
    assert replaced.headers["x-request-id"] not in ("", "bad id")
    assert kept.headers["x-content-type-options"] == "nosniff"
    assert kept.headers["content-security-policy"].startswith("default-src 'none'")
    assert "vary" not in kept.headers  # no CORS configured


async def test_the_edge_refuses_oversized_headers_and_bodies_announced_or_streamed() -> None:
    app = edge_app()
    headers = await call(app, headers={"x-pad": "v" * 600, "X-Request-ID": "req-2"})
    announced = await call(app, content=b"x" * 65)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 20

    streamed = await call(app, content=chunks())
    assert (headers.status_code, headers.json()["error"]) == (431, "headers_too_large")
    assert headers.json()["correlationId"] == headers.headers["x-request-id"] == "req-2"
    assert (announced.status_code, announced.json()["error"]) == (413, "payload_too_large")
    assert (streamed.status_code, streamed.json()["error"]) == (413, "payload_too_large")
    assert streamed.headers["x-frame-options"] == "DENY"


async def test_the_edge_adds_cors_headers_as_starlette_does() -> None:
    app = edge_app(cors=CORS)
    allowed = await call(app, headers={"origin": "http://app.example"})
    other = await call(app, headers={"origin": "http://evil.example"})
    none = await call(app)
    own_vary = await call(app, content=b"vary")
    preflight = await call(
        app, "OPTIONS", headers={"origin": "http://app.example", "access-control-request-method": "POST"}
    )
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert allowed.headers["access-control-expose-headers"] == "X-Request-ID"
    assert allowed.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in other.headers and other.headers["vary"] == "Origin"
    assert none.headers["vary"] == "Origin" and "access-control-expose-headers" not in none.headers
    assert own_vary.headers.get_list("vary") == ["Accept, Origin"]
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_a_direct_route_refuses_an_endpoint_with_parameters_it_would_not_solve() -> None:
    async def endpoint(request: Request, page: int) -> Response:
        return Response()

    with pytest.raises(TypeError, match="only the Request"):
        FastAPI().router.add_api_route("/x", endpoint, route_class_override=DirectRoute)
