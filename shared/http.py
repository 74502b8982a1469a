"""What every HTTP service shares: the one JSON error envelope, correlation ids, request limits, security
headers, the client's address, and the decoding of JSON bodies into the envelope's `invalid_body`."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, TypeVar

import orjson
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    EngineError,
    HeadersTooLarge,
    InvalidBody,
    PayloadTooLarge,
    RetryLater,
    UnsupportedMediaType,
)
from shared.logging import configure_logging, get_logger

logger = get_logger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)

# The engine's own observability is Prometheus metrics and JSON logs. With these off, FastAPI's native
# OpenTelemetry does not look the global providers up on every request (~5 % of a request's CPU).
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUS_CODES = {
    400: "invalid_body",
    404: "not_found",
    405: "method_not_allowed",
    409: "idempotency_conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


class ErrorBody(BaseModel):
    """The one error envelope, for HTTP and WebSocket alike."""

    error: str
    message: str
    details: list[dict[str, Any]] | None = None
    retryAfter: int | None = None
    correlationId: str | None = None


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    body = ErrorBody(error=code, message=message, correlationId=current_request_id(), **extra)
    return body.model_dump(exclude_none=True)


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("correlationId")
    return str(value) if value is not None else None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    response = json_response(error_body(code, message, **extra), status)
    response.headers.update(headers or {})
    return response


_DESCRIPTIONS = {
    409: "idempotency_conflict (another body under this Idempotency-Key) or idempotency_in_progress",
    429: "rate_limited or queue_full, with retryAfter and Retry-After",
    503: "service_unavailable: a dependency did not answer in time",
}


def error_responses(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that can fail with these statuses, all in the one envelope;
    `described` (`e409="..."`) words a status for this route."""
    return {
        status: {
            "model": ErrorBody,
            "description": described.get(
                f"e{status}", _DESCRIPTIONS.get(status, _STATUS_CODES.get(status, "error"))
            ),
        }
        for status in statuses
    }


def validation_details(errors: Sequence[Any], *, skip: int = 0) -> list[dict[str, Any]]:
    """Pydantic errors as the envelope's field-level `details`: `field` (dotted camelCase path) and
    `message`. A model-level error names its field through ctx["field"], else it is about the `body`."""
    details = []
    for err in errors:
        loc = [str(p) for p in err["loc"][skip:]]
        ctx = err.get("ctx") or {}
        field = ".".join(loc) or str(ctx.get("field", "body"))
        details.append({"field": field, "message": err["msg"]})
    return details


async def decode_json_body(request: Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body as `model`, or the envelope's refusal: 415 for another media type, 400
    `invalid_body` (with details) for malformed JSON or a body that breaks the model's rules."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(media_type)
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(
            "the body is not valid JSON", details=[{"field": "body", "message": str(exc)}]
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidBody("the request body is invalid", details=validation_details(exc.errors())) from exc


def client_address(request: HTTPConnection, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client's IP: the socket peer, unless the peer is a trusted proxy; then the right-most address of
    X-Forwarded-For that is not itself a trusted proxy (what a client prepends cannot spoof it)."""
    peer = request.client.host if request.client else "unknown"
    if not _is_trusted(peer, trusted):
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _is_trusted(address, trusted):
            return address if _is_ip(address) else peer
    return forwarded[0] if forwarded and _is_ip(forwarded[0]) else peer


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


# The same few peers and forwarded addresses come back request after request: parse each once. Text
# longer than any address is parsed (and refused) every time rather than remembered.
_parse_ip_cached = functools.lru_cache(maxsize=4096)(_parse_ip)
_LONGEST_ADDRESS = 64


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    return _parse_ip_cached(text) if len(text) <= _LONGEST_ADDRESS else _parse_ip(text)


def _is_ip(text: str) -> bool:
    return _ip(text) is not None


def _is_trusted(address: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in trusted)


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOC_PATHS = ("/docs", "/redoc")
_API_HEADERS = [*SECURITY_HEADERS, API_CSP]


def _add_vary_origin(headers: list[tuple[bytes, bytes]]) -> None:
    """Fold the response's Vary headers into one that also names Origin (as Starlette's CORS does)."""
    values = [v for k, v in headers if k.lower() == b"vary"]
    headers[:] = [(k, v) for k, v in headers if k.lower() != b"vary"]
    headers.append((b"vary", b", ".join([*values, b"Origin"])))


@dataclass(frozen=True)
class CorsPolicy:
    """Which browser origins may call the API, and what their scripts may send and read."""

    allow_origins: Sequence[str]
    allow_methods: Sequence[str]
    allow_headers: Sequence[str]
    expose_headers: Sequence[str]
    max_age: int = 600


class HttpEdgeMiddleware:
    """Everything an HTTP service does around each request, in one pure ASGI layer and one pass over the
    request headers (four layers cost ~4x the calls and header scans on every request):

    - correlation: a well-formed X-Request-ID is kept, else one is made; it is bound to the log context,
      put in `scope["state"]["request_id"]` and echoed on the response;
    - limits: a header block over `max_header_bytes` is 431, a body over `max_body_bytes` is 413, whether
      announced by Content-Length or streamed in chunks, in the one envelope;
    - security headers on every response (a strict CSP except on the interactive docs);
    - CORS when `cors` is given: preflights answered as Starlette's CORSMiddleware does, and on other
      responses the same headers it adds (`Vary: Origin`, the allowed origin, the exposed headers).
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, cors: CorsPolicy | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_headers = max_header_bytes
        self._cors = (
            CORSMiddleware(
                app,
                allow_origins=cors.allow_origins,
                allow_methods=cors.allow_methods,
                allow_headers=cors.allow_headers,
                expose_headers=cors.expose_headers,
                max_age=cors.max_age,
            )
            if cors is not None
            else None
        )
        self._cors_simple = (
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._cors.simple_headers.items()]
            if self._cors is not None
            else []
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = 0
        given = length = origin = None
        chunked = preflight = False
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"x-request-id":
                given = value
            elif name == b"content-length":
                length = value
            elif name == b"origin":
                if origin is None:
                    origin = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"access-control-request-method":
                preflight = True
        request_id = (
            given.decode("latin-1")
            if given is not None and _VALID_REQUEST_ID.match(given.decode("latin-1"))
            else str(uuid.uuid4())
        )
        scope.setdefault("state", {})["request_id"] = request_id
        extra = self._response_headers(scope, request_id, origin)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if headers:  # what the response set itself wins (a Vary of its own gains Origin)
                    present = {k.lower() for k, _ in headers}
                    if self._cors is not None and b"vary" in present:
                        _add_vary_origin(headers)
                    headers.extend(h for h in extra if h[0] not in present)
                else:
                    headers.extend(extra)
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(correlationId=request_id)
        try:
            if size > self.max_headers:
                await self._refuse(HeadersTooLarge(self.max_headers), scope, receive, send_with_headers)
                return
            if self._cors is not None and preflight and origin is not None and scope["method"] == "OPTIONS":
                response = self._cors.preflight_response(request_headers=Headers(scope=scope))
                await response(scope, receive, send_with_headers)
                return
            if length is not None and not chunked and length.isdigit():
                if int(length) > self.max_body:
                    await self._refuse(PayloadTooLarge(self.max_body), scope, receive, send_with_headers)
                    return
                # The server reads exactly Content-Length bytes: nothing to count.
                await self.app(scope, receive, send_with_headers)
                return
            await self.app(scope, self._counting(receive), send_with_headers)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    def _response_headers(
        self, scope: Scope, request_id: str, origin: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        path = scope.get("path", "")
        extra = list(SECURITY_HEADERS) if path.startswith(DOC_PATHS) else list(_API_HEADERS)
        extra.append((REQUEST_ID_HEADER_BYTES, request_id.encode("latin-1")))
        cors = self._cors
        if cors is not None:
            extra.append((b"vary", b"Origin"))
            if origin is not None:
                extra.extend(self._cors_simple)
                if not cors.allow_all_origins and cors.is_allowed_origin(origin.decode("latin-1")):
                    extra.append((b"access-control-allow-origin", origin))
        return extra

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(self.max_body)
            return message

        return limited_receive

    @staticmethod
    async def _refuse(exc: EngineError, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(exc.http_status, exc.code, exc.message)(scope, receive, send)


class CorrelationMiddleware:
    """Accepts a well-formed X-Request-ID or makes one, binds it to the log context, and echoes it back
    (HTTP and WebSocket; HttpEdgeMiddleware does this and more for the HTTP API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER_BYTES, b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((REQUEST_ID_HEADER_BYTES, request_id.encode()))
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(correlationId=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> Response:
        if isinstance(exc, RetryLater):
            return error_response(
                exc.http_status,
                exc.code,
                exc.message,
                headers={"Retry-After": str(exc.retry_after), **exc.headers},
                details=exc.details,
                retryAfter=exc.retry_after,
            )
        return error_response(exc.http_status, exc.code, exc.message, details=exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        details = validation_details(exc.errors(), skip=1)
        return error_response(400, "invalid_body", "the request is invalid", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        logger.error("http.unexpected_error", error=repr(exc), exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")


def serve(service: str, app: FastAPI, host: str, port: int, level: str, **uvicorn_options: Any) -> None:
    """Run an HTTP service the one way: JSON logs, uvloop and httptools, no uvicorn log config, and no
    proxy-header rewriting (the app reads X-Forwarded-For itself, from TRUSTED_PROXIES only)."""
    configure_logging(service, level)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        proxy_headers=False,
        **uvicorn_options,
    )


def install_metrics(app: FastAPI) -> None:
    """GET /metrics: this process's metrics at the path itself (a mount would answer 307 first)."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
