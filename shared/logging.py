"""One JSON object per log line, from our code and from the libraries alike (structlog over stdlib logging).

Bind `orderId` and `correlationId` once per request or message with `bind_contextvars`; every line logged
while handling it carries them. No input can break or forge a line (control characters are replaced,
strings capped) and no client address is logged whole (IPv4 to its /24, IPv6 to its /48)."""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, WrappedLogger

MAX_FIELD_CHARS = 512
MAX_TRACEBACK_CHARS = 8000


def _sanitise(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Cap strings and strip control characters so that no input can forge or break a log line.

    A traceback keeps its line breaks (JSON escapes them) and its end, where the actual error is."""
    for key, value in event.items():
        if not isinstance(value, str):
            continue
        if key == "exception":
            event[key] = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in value)[
                -MAX_TRACEBACK_CHARS:
            ]
        else:
            event[key] = "".join(ch if ch.isprintable() else " " for ch in value)[:MAX_FIELD_CHARS]
    return event


def truncate_ip(address: str) -> str:
    """An address reduced to its network (/24 or /48): enough to see a pattern, not to name a person."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "unknown"
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


WEBSOCKET_HANDSHAKE = '%s - "WebSocket %s"'


def _access_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """uvicorn's access and WebSocket-handshake lines become fields (method, path, status) with the client
    address truncated and the query string dropped."""
    record = event.get("_record")
    args = event.pop("positional_args", None)
    if record is None or not isinstance(args, tuple):
        return event
    if record.name == "uvicorn.access" and len(args) == 5:
        client, method, path, _version, status = args
    elif str(record.msg).startswith(WEBSOCKET_HANDSHAKE) and len(args) >= 2:
        client, method, path = args[0], "WEBSOCKET", args[1]
        status = args[2] if len(args) == 3 else str(record.msg).rsplit(" ", 1)[-1].strip("[]")
    else:
        return event
    event.update(
        event="http.request",
        method=method,
        path=str(path).split("?", 1)[0],
        status=status,
        client=truncate_ip(str(client)),
    )
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
        foreign_pre_chain=[*shared, _access_fields],
        pass_foreign_args=True,
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
