"""The auth hook: the one dependency every API route takes. Without API_KEYS it admits everyone as the
anonymous principal, and the client's address scopes idempotency keys, rate limits, the orders list and
cancels. With API_KEYS it requires `Authorization: Bearer <key>` (401 `unauthorized` without one, 403
`forbidden` for a key nobody holds, in the error envelope), and the key's principal scopes them instead
(shared/web/apikeys.py: the key file, the constant-time check)."""

from __future__ import annotations

from fastapi import FastAPI, Request

from shared.web.apikeys import ANONYMOUS, KeyRing, Principal
from shared.web.apikeys import authenticate as identify

__all__ = ["ANONYMOUS", "Principal", "authenticate", "install_auth"]


async def authenticate(request: Request) -> Principal:
    keys: KeyRing | None = request.app.state.keys
    return identify(keys, request)


def install_auth(app: FastAPI, keys: KeyRing | None) -> None:
    """Keep the key ring on the app (a 401 carries the challenge RFC 9110 asks of it: the envelope's
    `engine_error_response` adds it)."""
    app.state.keys = keys
