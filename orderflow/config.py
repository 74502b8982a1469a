"""Which server to talk to: `--url`, else $ORDERFLOW_URL, else the local default; the WebSocket address is
derived from it (http -> ws, https -> wss, same host, port and path prefix)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

DEFAULT_URL = "http://127.0.0.1:3000"
URL_ENV = "ORDERFLOW_URL"
EXECUTE_PATH = "/api/orders/execute"
WS_SCHEMES = {"http": "ws", "https": "wss"}


def base_url(flag: str | None, environ: Mapping[str, str]) -> str:
    """The server's base URL, normalised (see `normalise`); raises ValueError for one that is not usable."""
    return normalise(flag or environ.get(URL_ENV) or DEFAULT_URL)


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
