"""The executor's sweep with in-memory stand-ins for Postgres, the venue and the order steps: one order
that fails (a value Postgres refuses included) is skipped and counted and does not stop the pass, an
unreachable Postgres does, and only the executor holding the sweep lock sweeps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from prometheus_client import REGISTRY

from executor import repository
from executor.service import ExecutorService
from shared.domain.order import OrderRecord, SwapResult
from shared.domain.status import OrderStatus
from tests.unit.test_orders import make_order


class Conn:
    def __init__(self, lock_free: bool) -> None:
        self.lock_free = lock_free
        self.unlocked = False

    async def fetchval(self, sql: str, *args: Any) -> bool:
        assert "pg_try_advisory_lock" in sql
        return self.lock_free

    async def execute(self, sql: str, *args: Any) -> None:
        assert "pg_advisory_unlock" in sql
        self.unlocked = True


class Pool:
    def __init__(self, lock_free: bool = True) -> None:
        self.conn = Conn(lock_free)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        yield self.conn


class Venue:
    """Settles every order as not landed, except those told to fail."""

    def __init__(self, failing: dict[UUID, Exception]) -> None:
        self.failing = failing
        self.settled: list[UUID] = []

    async def settle(self, order_id: UUID, attempt: int) -> SwapResult | None:
        if order_id in self.failing:
            raise self.failing[order_id]
        self.settled.append(order_id)
        return None


class Outbox:
    def __init__(self) -> None:
        self.written: list[Any] = []

    async def write(self, messages: list[Any]) -> None:
        self.written.extend(messages)


class Steps:
    deadline_ms = 60_000

    def __init__(self) -> None:
        self.outbox = Outbox()
        self.retried: list[UUID] = []
        self.timed_out: list[UUID] = []

    def overdue(self, order: OrderRecord) -> bool:
        return False

    async def retry_or_fail(self, order: OrderRecord, error: Exception) -> None:
        self.retried.append(order.id)

    async def time_out(self, order: OrderRecord) -> None:
        self.timed_out.append(order.id)


def service(pool: Pool, venue: Venue, steps: Steps) -> ExecutorService:
    return ExecutorService(
        steps,  # type: ignore[arg-type]
        venue,  # type: ignore[arg-type]
        pool,
        None,  # type: ignore[arg-type]
        swap_window_ms=5000,
        stale_step_ms=10_000,
    )


@pytest.fixture
def found(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[OrderRecord]]:
    """What the sweep's three queries return."""
    rows: dict[str, list[OrderRecord]] = {"settled": [], "overdue": [], "stalled": []}

    async def settled(*_: Any, **__: Any) -> list[OrderRecord]:
        return rows["settled"]

    async def overdue(*_: Any, **__: Any) -> list[OrderRecord]:
        return rows["overdue"]

    async def stalled(*_: Any, **__: Any) -> list[OrderRecord]:
        return rows["stalled"]

    monkeypatch.setattr(repository, "settled_submissions", settled)
    monkeypatch.setattr(repository, "overdue_unsubmitted", overdue)
    monkeypatch.setattr(repository, "stalled_before_submission", stalled)
    return rows


async def test_one_order_that_fails_to_settle_does_not_stop_the_others(
    found: dict[str, list[OrderRecord]],
) -> None:
    orders = [make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=1) for _ in range(3)]
    found["settled"] = orders
    found["overdue"] = [overdue := make_order(status=OrderStatus.BUILDING, seq=3)]
    venue, steps, pool = Venue({orders[0].id: RuntimeError("a corrupt row")}), Steps(), Pool()
    await service(pool, venue, steps).sweep()
    assert venue.settled == [orders[1].id, orders[2].id]
    assert steps.retried == [orders[1].id, orders[2].id]  # not landed, attempts left: retried
    assert steps.timed_out == [overdue.id]  # and the pass went on to its other steps
    assert pool.conn.unlocked


async def test_an_unreachable_postgres_ends_the_pass(found: dict[str, list[OrderRecord]]) -> None:
    orders = [make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=1) for _ in range(2)]
    found["settled"] = orders
    venue, steps, pool = Venue({orders[0].id: asyncpg.ConnectionDoesNotExistError("gone")}), Steps(), Pool()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await service(pool, venue, steps).sweep()
    assert venue.settled == [] and pool.conn.unlocked


async def test_an_executor_without_the_sweep_lock_does_not_sweep(found: dict[str, list[OrderRecord]]) -> None:
    found["settled"] = [make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=1)]
    venue, steps, pool = Venue({}), Steps(), Pool(lock_free=False)
    await service(pool, venue, steps).sweep()
    assert venue.settled == [] and steps.retried == [] and not pool.conn.unlocked


def skipped(step: str) -> float:
    """sweep_rows_skipped_total for the executor's `step`, as /metrics would show it."""
    return REGISTRY.get_sample_value("sweep_rows_skipped_total", {"stage": "executor", "step": step}) or 0.0


@pytest.mark.parametrize(
    "refused",
    [
        asyncpg.exceptions._base.DataError("invalid input for query argument $2"),  # an InterfaceError
        asyncpg.DataError("invalid input for query argument $2: Decimal('NaN') (numeric out of range)"),
    ],
)
async def test_a_value_postgres_refuses_skips_its_order_and_the_pass_goes_on(
    found: dict[str, list[OrderRecord]], refused: Exception
) -> None:
    """Bug caught: one order's bad value ending the whole pass, because asyncpg's InterfaceError-flavoured
    DataError matched UNREACHABLE. Mutants killed: `_isolated` re-raising UNREACHABLE (the pass ends); no
    count of the skipped order."""
    orders = [make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=1) for _ in range(3)]
    found["settled"] = orders
    found["overdue"] = [overdue := make_order(status=OrderStatus.BUILDING, seq=3)]
    venue, steps, pool = Venue({orders[1].id: refused}), Steps(), Pool()
    before = skipped("settle")
    await service(pool, venue, steps).sweep()
    assert venue.settled == [orders[0].id, orders[2].id]
    assert steps.timed_out == [overdue.id]
    assert skipped("settle") == before + 1


async def test_a_stalled_order_that_cannot_be_redriven_is_skipped_and_the_others_are(
    found: dict[str, list[OrderRecord]],
) -> None:
    """Bug caught: one stalled row whose values no message can carry (a NUMERIC NaN) leaving every stalled
    order of the pass un-redriven. Mutant killed: building the messages in one comprehension (nothing is
    written)."""
    first, second = (make_order(status=OrderStatus.ROUTING, seq=2) for _ in range(2))
    bad = make_order(status=OrderStatus.ROUTING, seq=2, amount_in=Decimal("NaN"))
    found["stalled"] = [first, bad, second]
    steps = Steps()
    before = skipped("redrive")
    await service(Pool(), Venue({}), steps).sweep()
    assert [m.key for m in steps.outbox.written] == [first.id, second.id]
    assert skipped("redrive") == before + 1
