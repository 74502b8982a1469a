"""The auth hook: the one dependency every API route takes. Today it admits everyone as an anonymous
principal; a JWT check plugs in here (and only here), raising 401 / 403 in the error envelope, and the
principal's subject then scopes idempotency keys and rate limits instead of the client IP."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request


@dataclass(frozen=True)
class Principal:
    subject: str | None  # None: anonymous (identified by client IP only)


ANONYMOUS = Principal(subject=None)


async def authenticate(request: Request) -> Principal:
    return ANONYMOUS
