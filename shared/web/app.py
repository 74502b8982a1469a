"""How an HTTP service is built and run: routes without FastAPI's per-request machinery, /metrics, uvicorn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shared.runtime.config import Settings
from shared.runtime.gc_tuning import tune_gc
from shared.runtime.logging import configure_logging

# The engine's own observability is Prometheus metrics and JSON logs. With these off, FastAPI's native
# OpenTelemetry does not look the global providers up on every request (~5 % of a request's CPU).
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class DirectRoute(APIRoute):
    """A route documented like any other (status, responses, summary and `openapi_extra` from its
    declaration) whose endpoint is called with the Request alone, without FastAPI's per-request machinery:
    dependency solving, body sniffing, response-model serialization and two exit stacks, which together cost
    as much CPU as the rest of a request. The endpoint takes only `request: Request`, checks its own inputs
    (describe them in `openapi_extra`) and returns a Response; what it raises reaches the app's exception
    handlers as usual."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        declared = self.dependant
        if (
            declared.dependencies
            or declared.path_params
            or declared.query_params
            or declared.header_params
            or declared.cookie_params
            or declared.body_params
        ):
            raise TypeError(f"{path}: a DirectRoute endpoint takes only the Request (it would not be solved)")
        call: Callable[[Request], Awaitable[Response]] = endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await call(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app


# How long an idle keep-alive connection stays open. Longer than the proxy keeps its idle upstream
# connections (`keepalive_timeout` in infra/nginx*.conf*): were it shorter, a burst after a quiet spell could
# reuse a connection this side is closing at that instant, and nginx answers such a POST 502 (it never
# retries a non-idempotent request). uvicorn's default is 5 s; `make test` met eight at once.
KEEP_ALIVE_S = 75


def serve(
    service: str, app: FastAPI, host: str, port: int, settings: Settings, **uvicorn_options: Any
) -> None:
    """Run an HTTP service the one way: JSON logs, uvloop and httptools, no uvicorn log config, no
    proxy-header rewriting (the app reads X-Forwarded-For itself, from TRUSTED_PROXIES only), idle
    connections kept open longer than the proxy keeps them (KEEP_ALIVE_S), and the garbage collector set
    for a long-running process (shared/runtime/gc_tuning.py)."""
    configure_logging(service, settings.log_level)
    tune_gc(settings.gc_threshold)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        **uvicorn_options,
    )


def install_metrics(app: FastAPI) -> None:
    """GET /metrics: this process's metrics at the path itself (a mount would answer 307 first)."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
