"""Every process follows Postgres's clock: after a sync, `utcnow()` reads the database's time, whatever the
host's clock says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.runtime import clock


class SkewedPostgres:
    """Answers `SELECT clock_timestamp()` from a clock `ahead` of this host's, read at once and answered
    after `delays` in turn (a reply held up on its way back)."""

    def __init__(self, ahead: timedelta, delays: list[float]) -> None:
        self.ahead = ahead
        self.delays = delays

    async def fetchval(self, query: str) -> datetime:
        assert query == "SELECT clock_timestamp()"
        now = datetime.now(UTC) + self.ahead
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0.0)
        return now


@pytest.fixture(autouse=True)
def host_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_offset", timedelta(0))


async def test_after_a_sync_utcnow_reads_postgres_clock() -> None:
    ahead = timedelta(seconds=7)
    await clock.sync(SkewedPostgres(ahead, []))
    assert abs((clock.utcnow() - datetime.now(UTC)) - ahead) < timedelta(milliseconds=20)


async def test_the_offset_comes_from_the_quickest_round_trip() -> None:
    """A slow answer is the least certain (the server read its clock somewhere within the round trip); the
    quickest of the samples is taken, so one stalled sample does not move the clock."""
    ahead = timedelta(seconds=-3)
    offset = await clock.measure_offset(
        SkewedPostgres(ahead, [0.4, 0.002, 0.3, 0.2, 0.25]),
    )
    assert abs(offset - ahead) < timedelta(milliseconds=5)
