"""One JSON object per log line, from our code (structlog's own pipeline) and from the libraries (stdlib
logging through a formatter that adds the same fields) alike.

Bind `orderId` and `correlationId` once per request or message with `bind_contextvars`; every line logged
while handling it carries them. No input can break or forge a line (control characters are replaced,
strings capped) and no client address is logged whole (IPv4 to its /24, IPv6 to its /48)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import ipaddress
import logging
import sys
import threading
from typing import BinaryIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

MAX_FIELD_CHARS = 512
MAX_TRACEBACK_CHARS = 8000


def _clean(value: str, cap: int, keep: str = "") -> str:
    """`value` with every unprintable character but those in `keep` replaced by a space, cut to `cap`
    characters from the start (or from the end when `cap` is negative). The usual field is printable and
    short, and costs one C-level scan; only the rest is rebuilt character by character."""
    value = value[:cap] if cap > 0 else value[cap:]
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() or ch in keep else " " for ch in value)


def _sanitise(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Cap strings and strip control characters so that no input can forge or break a log line.

    A traceback keeps its line breaks (JSON escapes them) and its end, where the actual error is."""
    for key, value in event.items():
        if not isinstance(value, str) or (len(value) <= MAX_FIELD_CHARS and value.isprintable()):
            continue  # the usual field, checked in C without a call
        if key == "exception":
            event[key] = _clean(value, -MAX_TRACEBACK_CHARS, keep="\n")
        else:
            event[key] = _clean(value, MAX_FIELD_CHARS)
    return event


def truncate_ip(address: str) -> str:
    """An address reduced to its network (/24 or /48): enough to see a pattern, not to name a person."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return _network_of(host.strip("[]"))


@functools.lru_cache(maxsize=4096)
def _network_of(host: str) -> str:
    """Cached: an access line's client is mostly the same few hosts (the local proxy, above all), and
    parsing an address costs more than the rest of the line."""
    try:
        ip = ipaddress.ip_address(host)
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


class LineSink:
    """Where every line of the process goes, as bytes, in order, whichever path wrote it.

    `write` (our info and debug lines): while an asyncio loop runs in this thread, lines are gathered and
    written once, when the loop finishes its current iteration (`call_soon`): one write system call per
    batch of work instead of one per line, with no timer and nothing held past the iteration. Anywhere else
    (start-up, a thread without a loop) a line is written at once.

    `write_now` (warnings, errors, and every library line): written at once, after whatever waits. A process
    can die between two iterations (uvicorn re-raises SIGTERM right after its last lines; SIGKILL, OOM), and
    the lines that explain a death must not be the ones lost: at worst it loses the info lines of the
    iteration it died in.

    If the stream fails (the reader went away) lines are dropped rather than raised into the code that
    logged them."""

    FLUSH_BYTES = 65536

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop that will write _pending

    def write(self, line: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending += line
            if loop is None or len(self._pending) >= self.FLUSH_BYTES:
                self._write_pending()
                return
            if self._flush_on is loop:
                return
            self._flush_on = loop
        loop.call_soon(self.flush)

    def write_now(self, line: bytes) -> None:
        with self._lock:
            self._pending += line
            self._write_pending()

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        self._flush_on = None
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stdout: nowhere to log that either
            pass


class _Output:
    """The sink of the process's current configuration; loggers cached before a reconfiguration (tests)
    write through this to the new one."""

    sink: LineSink | None = None

    def __init__(self, name: str = "") -> None:
        self.name = name

    def write(self, line: bytes) -> None:
        if _Output.sink is not None:
            _Output.sink.write(line)

    def write_now(self, line: bytes) -> None:
        if _Output.sink is not None:
            _Output.sink.write_now(line)

    debug = info = write
    warning = error = critical = fatal = exception = msg = write_now


@atexit.register
def _flush_at_exit() -> None:
    if _Output.sink is not None:
        _Output.sink.flush()


class JsonLinesHandler(logging.Handler):
    """The stdlib handler (uvicorn, faust, aiokafka, and our stdlib loggers) onto the same sink; their lines
    (lifecycle, access, errors) are written at once."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode("utf-8", "replace") + b"\n"
        except Exception:  # a library's malformed record: report it the stdlib way, never raise into it
            self.handleError(record)
            return
        self.sink.write_now(line)

    def flush(self) -> None:
        self.sink.flush()


def _add_logger_name(logger: WrappedLogger, _: str, event: EventDict) -> EventDict:
    event["logger"] = logger.name
    return event


def _render(_: WrappedLogger, __: str, event: EventDict) -> bytes:
    return orjson.dumps(event, default=str, option=orjson.OPT_APPEND_NEWLINE)


def configure_logging(service: str, level: str = "info", stream: BinaryIO | None = None) -> logging.Handler:
    """One JSON object per line on stdout (or `stream`), for our loggers and the libraries' alike; returns
    the stdlib handler for frameworks that reset logging (mode's worker).

    Our loggers (`get_logger`) run structlog's own pipeline: a level below LOG_LEVEL is a no-op method, and
    a line is rendered by orjson straight to bytes, without a stdlib LogRecord or formatter. The libraries'
    stdlib loggers go through a ProcessorFormatter that adds the same fields. Both write to one LineSink, so
    lines keep their order. Call it once per process: a logger's level is fixed when it is first used."""
    sink = LineSink(stream if stream is not None else sys.stdout.buffer)
    if _Output.sink is not None:
        _Output.sink.flush()
    _Output.sink = sink

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            stamp,
            add_service,
            structlog.processors.format_exc_info,
            _sanitise,
            _render,
        ],
        logger_factory=_Output,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            add_service,
            _access_fields,
        ],
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
    handler = JsonLinesHandler(sink)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
