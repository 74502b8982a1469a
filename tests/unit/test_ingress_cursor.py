"""GET /api/orders's cursor: opaque to clients, exact for the server, and a forged one is a 400."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

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
