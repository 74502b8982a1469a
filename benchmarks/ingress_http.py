"""CPU of the ingress's own HTTP layer per request: `python -m benchmarks.ingress_http [--requests N]`.

Drives the real app from `ingress.api.create_app` straight through ASGI (no sockets, no uvicorn), with the
lifespan skipped and `service.place_order` replaced by a stub that answers at once, so what is measured is
the middleware, routing, input checks and response only. Each case runs in REPS slices and prints the
minimum and median process CPU per request: on a shared 2-core box the minimum is the steadier figure.
For the whole process under load, run wrk against a stack's ingress and record it with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import uvloop

from ingress import api, service
from ingress.schemas import OrderAccepted, PlaceOrder
from shared.domain.status import OrderStatus
from shared.runtime.config import Settings
from shared.runtime.logging import configure_logging

REPS = 40
BODY = b'{"type":"market","tokenIn":"SOL","tokenOut":"USDC","amountIn":"1.5","slippage":"0.01"}'
ACCEPTED = service.PlaceOutcome(OrderAccepted(order_id=uuid.uuid4(), status=OrderStatus.PENDING))
Headers = list[tuple[bytes, bytes]]


async def _accept_at_once(
    intake: Any, request: PlaceOrder, *, client: str, idempotency_key: str | None, correlation_id: str | None
) -> service.PlaceOutcome:
    return ACCEPTED


class _NoLimit:
    async def take(self, client: str) -> None:
        return None


def _scope(method: str, path: str, headers: Headers) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


async def _one(app: Any, method: str, path: str, headers: Headers, body: bytes) -> int:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client never disconnects
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(method, path, headers), receive, send)
    return int(sent[0]["status"])


def _post_headers(i: int) -> Headers:
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"idempotency-key", f"key-{i}".encode()),
    ]


async def _case(
    app: Any, name: str, method: str, path: str, headers: Callable[[int], Headers], body: bytes, n: int
) -> None:
    for i in range(200):  # warm-up
        await _one(app, method, path, headers(i), body)
    per_request = []
    for _ in range(REPS):
        started = time.process_time()
        for i in range(n // REPS):
            status = await _one(app, method, path, headers(i), body)
        per_request.append((time.process_time() - started) / (n // REPS) * 1e6)
    per_request.sort()
    print(
        f"{name:32} {status}  min {per_request[0]:6.1f} us  median {per_request[REPS // 2]:6.1f} us"
        " CPU per request"
    )


async def main(requests: int) -> None:
    service.place_order = _accept_at_once
    configure_logging("ingress", "warning")
    settings = Settings(rate_limit=0, cors_origins="http://app.example", log_level="warning")
    app = api.create_app(settings)
    app.state.trusted_proxies = settings.trusted_proxy_networks
    app.state.limiter = _NoLimit()
    app.state.intake = None
    execute = "/api/orders/execute"
    plain: Callable[[int], Headers] = lambda i: [(b"host", b"127.0.0.1:8000")]  # noqa: E731
    text = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"text/plain")]
    await _case(app, "GET /health", "GET", "/health", plain, b"", requests)
    await _case(app, "POST /api/orders/execute (stub)", "POST", execute, _post_headers, BODY, requests)
    await _case(app, "POST text/plain (415)", "POST", execute, lambda i: text, BODY, requests)
    await _case(app, "POST invalid body (400)", "POST", execute, _post_headers, b'{"type":"limit"}', requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=12_000, help="per case")
    uvloop.run(main(parser.parse_args().requests))
