"""API keys: who a request is from when API_KEYS names a key file.

The key file holds one key per line, `<principal> <sha256 of the key, 64 hex digits>`; blank lines and
lines starting with `#` are skipped. A principal may have several lines (a new key beside the old one while
clients move over). Only hashes are stored, so the file reveals no key, and `python -m shared.runtime.cli
api-key NAME` prints a new key with the line to add. The file is read when a service starts.

A request presents its key as `Authorization: Bearer <key>`. A browser cannot set headers on a WebSocket
handshake, so there the key may instead be offered as the subprotocols `bearer` and `bearer.<key>`; the
server selects `bearer`, so the key is never echoed back. A query parameter is not accepted: query strings
are written to access logs (uvicorn's, a proxy's) where headers are not.

A key is compared as its SHA-256 against every stored hash with `hmac.compare_digest`, with no early exit,
so the time an answer takes says nothing about which stored hash (if any) came close. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import HTTPConnection

from shared.domain.errors import Forbidden, Unauthorized

# A principal's name starts with a letter and has no `:`, so it can never read as an IP address (IPv4 starts
# with a digit, IPv6 has colons): orders and buckets scoped to a principal never mix with an address's.
PRINCIPAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "oe_"  # says what a leaked string is (and lets secret scanners find it)
SUBPROTOCOL = "bearer"
_SUBPROTOCOL_KEY = SUBPROTOCOL + "."
CHALLENGE = 'Bearer realm="order-engine"'  # the WWW-Authenticate of a 401


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a key's principal, or anonymous (then identified by its address only)."""

    subject: str | None


ANONYMOUS = Principal(subject=None)


class KeyFileError(ValueError):
    """API_KEYS names a file that cannot be read or has a malformed line (the message never quotes a line:
    a key pasted there by mistake must not reach the logs)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe (also a valid WebSocket subprotocol token)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_line(principal: str, key: str) -> str:
    """The key file's line for `key`."""
    if not PRINCIPAL_NAME.fullmatch(principal):
        raise ValueError(
            f"a principal is a letter, then up to 63 letters, digits, '.', '_' or '-', not {principal!r}"
        )
    return f"{principal} {hash_key(key)}"


@dataclass(frozen=True)
class KeyRing:
    """The known keys' hashes, each with its principal."""

    entries: tuple[tuple[str, bytes], ...]  # (principal, SHA-256 digest of the key)

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "API_KEYS") -> KeyRing:
        entries: list[tuple[str, bytes]] = []
        seen: set[bytes] = set()
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            well_formed = (
                len(fields) == 2 and PRINCIPAL_NAME.fullmatch(fields[0]) and _SHA256_HEX.fullmatch(fields[1])
            )
            if not well_formed:
                raise KeyFileError(
                    f"{source} line {number}: expected `<principal> <sha256 hex of the key>` (64 lowercase"
                    " hex digits; `python -m shared.runtime.cli api-key NAME` prints one)"
                )
            digest = bytes.fromhex(fields[1])
            if digest in seen:
                raise KeyFileError(f"{source} line {number}: this key's hash is listed twice")
            seen.add(digest)
            entries.append((fields[0], digest))
        if not entries:
            raise KeyFileError(f"{source} lists no key: every request would be refused")
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"API_KEYS: cannot read {path}: {type(exc).__name__}") from exc
        return cls.parse(text.splitlines(), source=str(path))

    def principal_of(self, key: str) -> str | None:
        """The principal whose key this is, or None. Every stored hash is compared, in constant time."""
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for principal, stored in self.entries:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found


def load_keys(path: Path | None) -> KeyRing | None:
    """The key ring API_KEYS names, or None (anonymous mode) when it is unset."""
    return None if path is None else KeyRing.load(path)


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (the scheme in any case), else None."""
    if authorization is None:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def offered_key(subprotocols: Iterable[str]) -> str | None:
    """The key a WebSocket handshake offers as the subprotocol `bearer.<key>`, else None."""
    for protocol in subprotocols:
        if protocol.startswith(_SUBPROTOCOL_KEY) and len(protocol) > len(_SUBPROTOCOL_KEY):
            return protocol[len(_SUBPROTOCOL_KEY) :]
    return None


def authenticate(keys: KeyRing | None, connection: HTTPConnection) -> Principal:
    """Who an HTTP request or WebSocket handshake is from: anonymous without API_KEYS; else the principal
    of its key, or Unauthorized (no key) / Forbidden (a key nobody holds)."""
    if keys is None:
        return ANONYMOUS
    key = bearer_key(connection.headers.get("authorization"))
    if key is None and connection.scope["type"] == "websocket":
        key = offered_key(connection.scope.get("subprotocols", ()))
    if key is None:
        raise Unauthorized()
    principal = keys.principal_of(key)
    if principal is None:
        raise Forbidden()
    return Principal(subject=principal)
