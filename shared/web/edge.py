"""What every HTTP request meets before a route: size and media-type limits, CORS, security headers, the
client's address (behind trusted proxies only), and the request id bound to the log context."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import structlog
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.domain.errors import (
    EngineError,
    HeadersTooLarge,
    InvalidBody,
    PayloadTooLarge,
)
from shared.web.envelope import error_response

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


FORWARDED_FOR = "X-Forwarded-For"
# Characters: above any address written without a scope id (45 at most), far below a btree index row.
LONGEST_IDENTITY = 64


def client_address(request: HTTPConnection, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client's IP, in canonical form (`canonical_address`): the socket peer, unless the peer is a trusted
    proxy; then the right-most address of X-Forwarded-For that is not itself a trusted proxy (what a client
    prepends cannot spoof it).

    The address identifies the client: it scopes Idempotency-Keys, rate limits and connection limits, and is
    stored and indexed with each order. So an X-Forwarded-For entry that would be it must be a plain address:
    one longer than LONGEST_IDENTITY characters or carrying an IPv6 scope id (`fe80::1%eth0`, which
    `ipaddress` accepts of any length) is refused with InvalidBody (400, naming the header): no proxy writes
    one. A short entry that is no address at all is ignored, and the peer stands for the client."""
    peer = request.client.host if request.client else "unknown"
    peer_ip = _ip(peer)
    if peer_ip is None:  # not an IP (a test client, a unix socket): the server's word, used as it is
        return peer
    if not _in(peer_ip, trusted):
        return canonical_address(peer_ip)
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _is_trusted(address, trusted):
            return _forwarded_identity(address) or canonical_address(peer_ip)
    if forwarded:  # only proxies in the chain: the first hop
        return _forwarded_identity(forwarded[0]) or canonical_address(peer_ip)
    return canonical_address(peer_ip)


def canonical_address(ip: IPv4Address | IPv6Address) -> str:
    """One spelling per address, so that one client is one identity: `ipaddress`'s compressed form
    (`0:0::1` and `::1` alike), and an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, how a dual-stack socket
    reports an IPv4 peer) as its IPv4 address. A peer's scope id (an interface name, from the OS) is kept."""
    return _unmapped(ip).compressed


def _unmapped(ip: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None and ip.scope_id is None:
        return ip.ipv4_mapped
    return ip


def _forwarded_identity(text: str) -> str | None:
    """An X-Forwarded-For entry as the client's identity: its canonical form, None when it is no address,
    or the 400 when it is one that cannot be an identity (too long, or scoped)."""
    if len(text) > LONGEST_IDENTITY:
        raise _refused(f"the client's address is longer than {LONGEST_IDENTITY} characters")
    ip = _ip(text)
    if ip is None:
        return None
    if isinstance(ip, IPv6Address) and ip.scope_id is not None:
        raise _refused("the client's address carries an IPv6 scope id")
    return canonical_address(ip)


def _refused(reason: str) -> InvalidBody:
    return InvalidBody(
        f"{FORWARDED_FOR} does not name a client address",
        details=[{"field": FORWARDED_FOR, "message": reason}],
    )


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """The address `text` spells (an IPv4-mapped one as its IPv4 address, also when matched against the
    trusted proxies); None when it spells none."""
    try:
        return _unmapped(ip_address(text))
    except ValueError:
        return None


# The same few peers and forwarded addresses come back request after request: parse each once. Text
# longer than any address is parsed (and refused) every time rather than remembered.
_parse_ip_cached = functools.lru_cache(maxsize=4096)(_parse_ip)


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    return _parse_ip_cached(text) if len(text) <= LONGEST_IDENTITY else _parse_ip(text)


def _in(ip: IPv4Address | IPv6Address, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    return any(ip in network for network in trusted)


def _is_trusted(address: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    ip = _ip(address)
    return ip is not None and _in(ip, trusted)


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
