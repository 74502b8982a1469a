"""Who a WebSocket handshake is from, and whether it may go on: its API key (with API_KEYS), its client
(the key's principal, else its address behind the trusted proxies), and a token from that client's read
bucket, the one ingress's GETs take from (shared/web/ratelimit.py). A refusal is an HTTP answer in the
error envelope; no socket is opened."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from starlette.responses import Response
from starlette.websockets import WebSocket

from shared.domain.errors import EngineError
from shared.web.apikeys import SUBPROTOCOL, KeyRing, authenticate
from shared.web.edge import client_address
from shared.web.envelope import engine_error_response
from shared.web.ratelimit import RateLimiter


async def admit(ws: WebSocket, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client the handshake is from, once its key is checked and it has taken a read token; raises
    the EngineError to answer with: Unauthorized, Forbidden, InvalidBody (an X-Forwarded-For naming no
    usable address), RateLimited, ServiceUnavailable (Redis down and RATE_LIMIT_FAIL_OPEN=false)."""
    keys: KeyRing | None = ws.app.state.keys
    client = authenticate(keys, ws).subject or client_address(ws, trusted)
    limiter: RateLimiter | None = ws.app.state.read_limiter
    if limiter is not None:
        await limiter.take(client)
    return client


def subprotocol(ws: WebSocket) -> str | None:
    """`bearer` when the client offered it (a browser fails a handshake whose answer selects none of the
    subprotocols it offered), whether or not a key is needed; the key itself is never echoed."""
    return SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", ()) else None


def refusal(exc: EngineError) -> Response:
    """`exc` as the handshake's HTTP answer, rendered as ingress renders it (with the headers its status
    calls for: Retry-After, the Bearer challenge of a 401)."""
    return engine_error_response(exc)
