"""One JSON object per log line, from our code and from the libraries alike (structlog over stdlib logging).

Bind `orderId` and `correlationId` once per request or message with `bind_contextvars`; every line logged
while handling it carries them."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, WrappedLogger

MAX_FIELD_CHARS = 512


def _sanitise(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Cap strings and strip control characters so that no input can forge or break a log line."""
    for key, value in event.items():
        if isinstance(value, str):
            cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
            event[key] = cleaned[:MAX_FIELD_CHARS]
    return event


def configure_logging(service: str, level: str = "info") -> logging.Handler:
    """Route every logger through one JSON handler on stdout; returns it for frameworks that reset logging."""

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        add_service,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _sanitise,
            structlog.processors.JSONRenderer(
                serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()
            ),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
