"""What the client can end with: its exit codes, and the two ways a request can fail (the server refused it,
or could not be reached). Each error knows its exit code and the JSON envelope it prints with `--json`."""

from __future__ import annotations

import json
from enum import IntEnum
from http import HTTPStatus
from typing import Any, ClassVar


class ExitCode(IntEnum):
    SUCCESS = 0  # the command did what it was asked; for order --watch and watch: the order was confirmed
    FAILED = 1  # the order failed
    USAGE = 2  # argparse's: a missing or malformed argument
    CANCELLED = 3  # the order was cancelled
    REFUSED = 4  # the server answered with an error (4xx, or 5xx / 429 still after the retries)
    UNREACHABLE = 5  # no answer from the server


TERMINAL_EXIT_CODES: dict[str, ExitCode] = {
    "confirmed": ExitCode.SUCCESS,
    "failed": ExitCode.FAILED,
    "cancelled": ExitCode.CANCELLED,
}
TERMINAL = frozenset(TERMINAL_EXIT_CODES)


def exit_code_for(status: str) -> ExitCode:
    """The exit code of a watch that ended with the order in `status` (which must be terminal)."""
    try:
        return TERMINAL_EXIT_CODES[status]
    except KeyError:
        raise ValueError(f"{status!r} is not a terminal status") from None


class OrderflowError(Exception):
    exit_code: ClassVar[ExitCode]

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint  # what the user can do about it, shown to people (not in the JSON envelope)

    def envelope(self) -> dict[str, Any]:
        raise NotImplementedError


class ServerRefused(OrderflowError):
    """The server answered with its error envelope (HTTP status `status`; None on a WebSocket, where the
    envelope comes as a message before the close)."""

    exit_code = ExitCode.REFUSED

    def __init__(self, status: int | None, envelope: dict[str, Any], *, hint: str | None = None) -> None:
        self.status = status
        self._envelope = envelope
        super().__init__(f"{self.code}: {envelope.get('message', '')}", hint=hint)

    @property
    def code(self) -> str:
        return str(self._envelope.get("error", "error"))

    @property
    def details(self) -> list[Any]:
        details = self._envelope.get("details")
        return details if isinstance(details, list) else []

    @property
    def retry_after(self) -> float | None:
        value = self._envelope.get("retryAfter")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None

    def envelope(self) -> dict[str, Any]:
        return dict(self._envelope)

    @classmethod
    def of(cls, status: int, body: bytes | str, *, hint: str | None = None) -> ServerRefused:
        return cls(status, envelope_of(status, body), hint=hint)


class Unreachable(OrderflowError):
    """No answer from the server: refused or dropped connections, timeouts. The envelope is the client's own
    (code `unreachable`), in the server's shape so scripts read one format."""

    exit_code = ExitCode.UNREACHABLE

    def __init__(self, url: str, reason: str, *, hint: str | None = None) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}: {reason}", hint=hint)

    def envelope(self) -> dict[str, Any]:
        return {"error": "unreachable", "message": self.message}


def envelope_of(status: int, body: bytes | str) -> dict[str, Any]:
    """The error envelope in a response body; a body that is not one (a proxy's HTML page) becomes one with
    the code `http_<status>`."""
    text = body.decode(errors="replace") if isinstance(body, bytes | bytearray) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return parsed
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unexpected answer"
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first_line or first_line.startswith("<"):  # nothing, or an HTML page: the phrase says it all
        return {"error": f"http_{status}", "message": phrase}
    return {"error": f"http_{status}", "message": f"{phrase}: {first_line[:200]}"}


def describe(exc: BaseException) -> str:
    """A short reason for a transport failure (some of them have an empty str())."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
