"""The error tree: one code per kind of error, and the HTTP status map derived from it."""

from __future__ import annotations

from shared.domain.errors import EngineError, status_codes


def every_error_class() -> list[type[EngineError]]:
    found, pending = [], [EngineError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_no_two_kinds_of_error_share_a_code() -> None:
    """A client routes on the code (retry or not, which message): two errors raised under one code would
    make it guess (NoVenueCanQuote and QuoteUnavailable once shared quote_unavailable, one retriable, one
    not). Bases that are only raised through their subclasses are left out."""
    raised = [cls for cls in every_error_class() if not cls.__subclasses__()]
    codes: dict[str, list[str]] = {}
    for cls in raised:
        codes.setdefault(cls.code, []).append(cls.__name__)
    assert {code: names for code, names in codes.items() if len(names) > 1} == {}


def test_the_status_map_names_each_status_after_its_first_error_class() -> None:
    assert status_codes() == {
        400: "invalid_body",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "idempotency_conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
        431: "headers_too_large",
        500: "internal_error",
        502: "dex_error",
        503: "service_unavailable",
    }
