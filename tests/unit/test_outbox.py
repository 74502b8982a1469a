"""The outbox against a fake producer: whose failure a send error is. A row Kafka refuses for itself is
parked and holds back only its order; a producer that fails as a producer (fenced, out of sequence, not
authorized, its sender ended) parks nothing and is replaced once; a replacement that cannot start, or fails
in turn soon after, ends the task (and, the task being essential, the process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from shared.messaging.outbox import DELETE_ROWS, PARK_ROWS, Outbox, OutboxRow
from shared.messaging.producer import PRODUCER_RETRY_WINDOW_S, Blame, ProducerFailed, ProducerLost, blame
from shared.messaging.topics import ORDER_STATUS
from shared.runtime.config import Settings
from tests.fixtures.stack import wait_for

SETTINGS = Settings(kafka_request_timeout_ms=100)  # a round waits 0.2 s for its acknowledgements


class Sender:
    """aiokafka's sender as `sender_alive` sees it: its task, running until the test ends it."""

    def __init__(self) -> None:
        self.sender_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class FakeProducer:
    """aiokafka's producer as the outbox uses it. `send` raises `at_send[key]` (as aiokafka does for a
    record too large, or once its sender has died), else returns a future that fails with `acked_with[key]`
    or is acknowledged; with `silent`, futures are never answered (a sender that was cancelled)."""

    def __init__(
        self,
        *,
        at_send: dict[str, BaseException] | None = None,
        acked_with: dict[str, BaseException] | None = None,
        everything: BaseException | None = None,
        silent: bool = False,
        start_error: BaseException | None = None,
    ) -> None:
        self.at_send = at_send or {}
        self.acked_with = acked_with or {}
        self.everything = everything
        self.silent = silent
        self.start_error = start_error
        self.sent: list[str] = []
        self.starting = asyncio.Event()
        self.may_start = asyncio.Event()
        self.may_start.set()
        self.started = self.stopped = False
        self._sender = Sender()

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: object) -> asyncio.Future[object]:
        name = key.decode()
        if name in self.at_send:
            raise self.at_send[name]
        self.sent.append(name)
        answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        error = self.everything or self.acked_with.get(name)
        if error is not None:
            answer.set_exception(error)
        elif not self.silent:
            answer.set_result(None)
        return answer

    async def start(self) -> None:
        self.starting.set()
        await self.may_start.wait()
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def kill_sender(self) -> None:
        self._sender.sender_task.cancel()


class Replacements:
    """The outbox's `replacement`: hands out the given producers in turn, and counts them."""

    def __init__(self, *producers: FakeProducer) -> None:
        self._producers = list(producers)
        self.made = 0

    def __call__(self, settings: Settings) -> Any:
        self.made += 1
        return self._producers.pop(0)


class Db:
    """A connection (or pool) that records the outbox's deletes and parks."""

    def __init__(self, relayable: list[OutboxRow] | None = None) -> None:
        self.deleted: list[int] = []
        self.parked: list[int] = []
        self.relayable = relayable or []

    async def execute(self, sql: str, ids: list[int], *args: object) -> None:
        if sql == DELETE_ROWS:
            self.deleted += ids
            self.relayable = [row for row in self.relayable if row.id not in ids]
        elif sql == PARK_ROWS:
            self.parked += ids
            self.relayable = [row for row in self.relayable if row.id not in ids]

    async def fetchval(self, sql: str, *args: object) -> bool:
        return True  # the relay's advisory lock: ours

    async def fetch(self, sql: str, *args: object) -> list[dict[str, object]]:
        return [vars_of(row) for row in self.relayable]

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Db]:
        yield self


def vars_of(row: OutboxRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in ("id", "topic", "key", "payload", "correlation_id")}


def row(row_id: int, key: str, topic: str = ORDER_STATUS.name) -> OutboxRow:
    return OutboxRow(row_id, topic, key, "{}", None)


def outbox(producer: FakeProducer, replacements: Replacements | None = None, db: Db | None = None) -> Outbox:
    def unexpected(_: Settings) -> Any:
        raise AssertionError("no producer should be replaced")

    return Outbox(db or Db(), producer, SETTINGS, replacement=replacements or unexpected)


ROW_REFUSALS = [MessageSizeTooLargeError(), RecordListTooLargeError(), InvalidTopicError()]
PRODUCER_FAILURES = [
    OutOfOrderSequenceNumber(),
    ProducerFenced(),
    TopicAuthorizationFailedError("order.status"),
    ClusterAuthorizationFailedError(),
    KafkaError("Unexpected error during batch delivery"),  # what a sender that died of anything else raises
]
PASSING = [
    KafkaTimeoutError(),
    NotLeaderForPartitionError(),
    UnknownTopicOrPartitionError(),
    ProducerClosed(),
]


@pytest.mark.parametrize("error", ROW_REFUSALS + PRODUCER_FAILURES + PASSING, ids=repr)
def test_each_error_is_blamed_on_the_row_the_producer_or_nobody(error: KafkaError) -> None:
    expected = (
        Blame.ROW if error in ROW_REFUSALS else Blame.PRODUCER if error in PRODUCER_FAILURES else Blame.NOBODY
    )
    assert blame(error) is expected


@pytest.mark.parametrize("where", ["at send", "in its acknowledgement"])
@pytest.mark.parametrize("error", ROW_REFUSALS, ids=repr)
async def test_a_row_kafka_refuses_for_itself_is_parked_and_the_others_go_out(
    error: KafkaError, where: str
) -> None:
    refused = {"bad": error}
    producer = FakeProducer(at_send=refused) if where == "at send" else FakeProducer(acked_with=refused)
    db = Db()
    await outbox(producer)._publish([row(1, "good"), row(2, "bad"), row(3, "other")], db)
    assert db.parked == [2], "the refused row"
    assert db.deleted == [1, 3], "the other orders' rows went out"


async def test_a_row_refused_at_send_holds_back_the_later_rows_of_its_order_only() -> None:
    producer = FakeProducer(at_send={"bad": MessageSizeTooLargeError()})
    db = Db()
    await outbox(producer)._publish([row(1, "bad"), row(2, "good"), row(3, "bad"), row(4, "good")], db)
    assert db.parked == [1] and db.deleted == [2, 4]
    assert producer.sent == ["good", "good"], "row 3 waits behind row 1, unsent and not parked"


@pytest.mark.parametrize("where", ["at send", "in its acknowledgement"])
@pytest.mark.parametrize("error", PRODUCER_FAILURES, ids=repr)
async def test_a_producer_failure_parks_nothing_and_names_the_producer(error: KafkaError, where: str) -> None:
    producer = FakeProducer(at_send={"a": error}) if where == "at send" else FakeProducer(everything=error)
    db = Db()
    with pytest.raises(ProducerFailed) as failed:
        await outbox(producer)._publish([row(1, "a"), row(2, "b")], db)
    assert failed.value.producer is producer
    assert db.parked == [] and db.deleted == [], "every row stays in the table for the next producer"


@pytest.mark.parametrize("error", PASSING, ids=repr)
async def test_an_error_that_may_pass_fails_the_round_and_blames_nobody(error: KafkaError) -> None:
    db = Db()
    with pytest.raises(type(error)):
        await outbox(FakeProducer(everything=error))._publish([row(1, "a")], db)
    assert db.parked == [] and db.deleted == []


async def test_a_producer_whose_sender_has_ended_fails_before_anything_is_sent() -> None:
    producer = FakeProducer()
    producer.kill_sender()
    box = outbox(producer)
    assert not box.publishing, "said at once, before any send notices"
    with pytest.raises(ProducerFailed):
        await box._publish([row(1, "a")], Db())
    assert producer.sent == []


async def test_a_sender_cancelled_under_a_round_is_found_when_the_round_times_out() -> None:
    producer = FakeProducer(silent=True)  # a cancelled sender fails nothing: the answers never come
    asyncio.get_running_loop().call_later(0.05, producer.kill_sender)
    with pytest.raises(ProducerFailed):
        await outbox(producer)._publish([row(1, "a")], Db())


async def test_a_failed_producer_is_replaced_once_and_its_rows_go_out_through_the_new_one() -> None:
    old, new = FakeProducer(everything=OutOfOrderSequenceNumber()), FakeProducer()
    replacements = Replacements(new)
    box = outbox(old, replacements)
    db = Db()
    with pytest.raises(ProducerFailed) as failed:
        await box._publish([row(1, "a")], db)
    # The sender and the relay may both meet the same failure: one replacement.
    await asyncio.gather(box._keeper.replace(failed.value), box._keeper.replace(failed.value))
    assert replacements.made == 1 and old.stopped and new.started
    assert box.producer is new and box.publishing
    await box._publish([row(1, "a")], db)
    assert db.deleted == [1] and db.parked == []
    await box.stop()
    assert new.stopped, "the outbox stops the producer it started"


async def test_nothing_is_published_while_the_replacement_starts() -> None:
    old, new = FakeProducer(), FakeProducer()
    new.may_start.clear()
    box = outbox(old, Replacements(new))
    replacing = asyncio.create_task(box._keeper.replace(ProducerFailed(old, "fenced")))
    await asyncio.wait_for(new.starting.wait(), 5)
    assert not box.publishing
    new.may_start.set()
    await replacing
    assert box.publishing


async def test_a_replacement_that_cannot_start_loses_the_producer() -> None:
    old, new = FakeProducer(), FakeProducer(start_error=KafkaConnectionError())
    box = outbox(old, Replacements(new))
    with pytest.raises(ProducerLost):
        await box._keeper.replace(ProducerFailed(old, "fenced"))
    assert new.stopped and not box.publishing


async def test_a_replacement_that_fails_soon_loses_the_producer_and_one_that_fails_later_is_replaced() -> (
    None
):
    first, second, third = FakeProducer(), FakeProducer(), FakeProducer()
    replacements = Replacements(second, third)
    box = outbox(first, replacements)
    await box._keeper.replace(ProducerFailed(first, "out of sequence"))
    with pytest.raises(ProducerLost):
        await box._keeper.replace(ProducerFailed(second, "out of sequence"))
    assert replacements.made == 1 and not box.publishing

    box = outbox(first, Replacements(second, third))
    await box._keeper.replace(ProducerFailed(first, "out of sequence"))
    assert box._keeper._replaced_at is not None
    box._keeper._replaced_at -= PRODUCER_RETRY_WINDOW_S  # it served past the window
    await box._keeper.replace(ProducerFailed(second, "out of sequence"))
    assert box.producer is third and box.publishing


async def test_the_sender_task_replaces_a_failed_producer_and_goes_on() -> None:
    old, new = FakeProducer(everything=OutOfOrderSequenceNumber()), FakeProducer()
    db = Db()
    box = outbox(old, Replacements(new), db=db)
    sender = asyncio.create_task(box._send_forever())
    try:
        await box.publish([row(1, "a")])
        await asyncio.wait_for(new.starting.wait(), 5)
        await box.publish([row(2, "b")])
        await wait_for(lambda: db.deleted == [2], timeout=5, what="the next round sent by the new producer")
        assert db.parked == [] and not sender.done(), "row 1 stays for the relay; the sender goes on"
    finally:
        sender.cancel()


async def test_the_relay_replaces_a_failed_producer_and_sends_the_rows_with_the_new_one() -> None:
    old, new = FakeProducer(everything=ProducerFenced()), FakeProducer()
    db = Db(relayable=[row(1, "a"), row(2, "a")])
    box = outbox(old, Replacements(new), db=db)
    relay = asyncio.create_task(box._relay_forever())
    try:
        await wait_for(lambda: db.deleted == [1, 2], timeout=5, what="the rows relayed by the new producer")
        assert db.parked == [] and new.sent == ["a", "a"]
    finally:
        relay.cancel()


@pytest.mark.parametrize("loop", ["_send_forever", "_relay_forever"])
async def test_a_producer_lost_ends_the_task_that_met_it(loop: str) -> None:
    """Both tasks are essential: ending is what makes the process exit (shared/runtime/tasks.py)."""
    first, second = FakeProducer(), FakeProducer(everything=OutOfOrderSequenceNumber())
    db = Db(relayable=[row(1, "a")])
    box = outbox(first, Replacements(second), db=db)
    await box._keeper.replace(ProducerFailed(first, "fenced"))  # `second` is a fresh replacement, and fails
    task = asyncio.create_task(getattr(box, loop)())
    await box.publish([row(1, "a")])
    done, _ = await asyncio.wait([task], timeout=10)
    assert done and isinstance(task.exception(), ProducerLost)
    assert db.parked == []
