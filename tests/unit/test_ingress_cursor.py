"""GET /api/orders's cursor: opaque to clients, exact for the server, and a forged one is a 400."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingress.repository import Position
from ingress.service import decode_cursor, encode_cursor
from shared.domain.errors import InvalidBody


def test_a_cursor_leads_back_to_the_exact_position() -> None:
    position = Position(datetime(2026, 11, 27, 22, 9, 50, 123456, tzinfo=UTC), uuid.uuid4())
    cursor = encode_cursor(position)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor, "URL-safe as it is"
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "bm90LWEtY3Vyc29y",  # base64 of text that is not JSON
        "WzFd",  # [1]
        "WyIyMDI2LTExLTI3VDIyOjA5OjUwIiwgIngiXQ",  # a time without its offset, and no uuid
    ],
)
def test_anything_else_is_an_invalid_body_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(InvalidBody) as refused:
        decode_cursor(cursor)
    assert refused.value.details == [{"field": "cursor", "message": "not a cursor from a previous page"}]


def cursor_at(time: str) -> str:
    """A cursor as this API writes them, holding `time`."""
    return base64.urlsafe_b64encode(orjson.dumps([time, str(uuid.uuid4())])).rstrip(b"=").decode()


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_with_no_utc_equivalent_is_an_invalid_body_naming_the_cursor(time: str) -> None:
    """Bug caught: a cursor that decodes but whose time asyncpg cannot send (its UTC instant is outside
    datetime's range): a DataError from the query instead of a 400 naming the cursor. Mutant killed:
    decode_cursor without its conversion to UTC (the cursor is accepted)."""
    with pytest.raises(InvalidBody) as refused:
        decode_cursor(cursor_at(time))
    assert refused.value.details == [{"field": "cursor", "message": "not a cursor from a previous page"}]


def test_a_cursor_in_another_offset_is_the_same_instant_in_utc() -> None:
    position = decode_cursor(cursor_at("2026-11-27T23:09:50.123456+01:00"))
    assert position.created_at == datetime(2026, 11, 27, 22, 9, 50, 123456, tzinfo=UTC)
    assert position.created_at.utcoffset() == timedelta(0)
