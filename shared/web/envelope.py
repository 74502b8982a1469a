"""The one error envelope of the HTTP and WebSocket APIs, and how errors become it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shared.domain.errors import (
    EngineError,
    InvalidBody,
    RetryLater,
    Unauthorized,
    UnsupportedMediaType,
    status_codes,
)
from shared.runtime.logging import get_logger
from shared.web.apikeys import CHALLENGE

logger = get_logger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)


_STATUS_CODES = status_codes()  # for the refusals Starlette raises itself (no route, 405)


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


def engine_error_response(exc: EngineError) -> Response:
    """`exc` in the envelope, with the headers its status calls for: `Retry-After` (and whatever else the
    refusal adds, e.g. RateLimit) with `retryAfter` for a RetryLater, the Bearer challenge for a 401 (RFC
    9110). The one rendering of an EngineError, for an HTTP answer and a refused WebSocket handshake alike."""
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = CHALLENGE
    if isinstance(exc, RetryLater):
        headers.update({"Retry-After": str(exc.retry_after), **exc.headers})
        extra["retryAfter"] = exc.retry_after
    return error_response(
        exc.http_status, exc.code, exc.message, headers=headers, details=exc.details, **extra
    )


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> Response:
        return engine_error_response(exc)

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
