"""Which server to talk to: `--url`, else $ORDERFLOW_URL, else the local default; the WebSocket address is
derived from it (http -> ws, https -> wss, same host, port and path prefix). With which key: `--api-key`,
else $ORDERFLOW_API_KEY, else none (a server without API_KEYS needs none)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

DEFAULT_URL = "http://127.0.0.1:3000"
URL_ENV = "ORDERFLOW_URL"
API_KEY_ENV = "ORDERFLOW_API_KEY"
EXECUTE_PATH = "/api/orders/execute"
WS_SCHEMES = {"http": "ws", "https": "wss"}


def base_url(flag: str | None, environ: Mapping[str, str]) -> str:
    """The server's base URL, normalised (see `normalise`); raises ValueError for one that is not usable."""
    return normalise(flag or environ.get(URL_ENV) or DEFAULT_URL)


def api_key(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The API key to send, or None; raises ValueError for one no HTTP header could carry."""
    key = (flag or environ.get(API_KEY_ENV) or "").strip()
    if not key:
        return None
    if not key.isprintable() or not key.isascii() or " " in key:
        raise ValueError(f"the API key must be printable ASCII without spaces (--api-key or ${API_KEY_ENV})")
    return key


def auth_headers(key: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>` for every request and WebSocket handshake, or nothing."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def normalise(url: str) -> str:
    """`url` without trailing slashes; it must be http(s), with a host, and no query or fragment. A path is
    kept as a prefix (a server behind a proxy at https://example.com/engine)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in WS_SCHEMES or not parts.hostname:
        raise ValueError(f"the server URL must be http://HOST[:PORT] or https://..., not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the server URL must not have a query or a fragment: {url!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_url(base: str, order_id: str, last_seq: int | None = None) -> str:
    """The order's WebSocket stream on the server at `base` (a normalised URL), resuming after `last_seq`."""
    parts = urlsplit(normalise(base))
    query: dict[str, str | int] = {"orderId": order_id}
    if last_seq is not None:
        query["lastSeq"] = last_seq
    path = parts.path + EXECUTE_PATH
    return urlunsplit((WS_SCHEMES[parts.scheme], parts.netloc, path, urlencode(query), ""))
