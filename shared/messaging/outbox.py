"""The one way every process commits a change and then publishes it: the transactional outbox.

A transaction that changes an order also inserts the messages that announce it (its status event, and the
command for the next stage if any) into `outbox`, in the same statement. After the commit the writer hands
the rows to its process's `Outbox`, which sends them in the order it got them (one sender task, one
idempotent acks=all producer), and deletes them once the broker has acknowledged them. Nothing is lost if a
process dies in between: its rows stay in the table and the relay publishes them.

Per-order order on the topics holds for each row's first copy, because a writer publishes, before its own
rows, every older row of the same orders that is still in the table (the statement that writes seq n + 1
returns them; it can only run after seq n committed). A row may go out twice (the relay and a writer, or two
writers), and a copy sent again may land after a later row of its order: a broker that wrote a batch and
died before acknowledging it leaves the rows in the table, to be sent again (the chaos suite's broker
scenario shows it). Consumers drop a seq they have seen (docs/events.md).

The relay runs in every process but publishes in only one at a time (an advisory lock), in id order, rows
older than OUTBOX_RELAY_GRACE_MS: those whose writer died, or lost its connection to Kafka.

A row Kafka refuses for good (too large, say) is parked (migration 009), not retried with its batch forever:
the rest of the batch goes out, the relay skips it and the later rows of its order, and a writer that writes
the order again tries it first.

A refusal is the row's only when Kafka refuses that record and would refuse it from any producer (ROW_ERRORS,
shared/messaging/producer.py `blame`). A producer can also fail for good as a producer: fenced, out of
sequence with the broker, not authorized, or its sender task ended. aiokafka then raises the same error for
every later send, so each row would be parked in turn, while this process went on taking orders that could
never leave it. Such a failure parks nothing: the outbox's `ProducerKeeper` replaces the producer (closed,
and a new one started with `new_producer`) and the rows, still in the table, go out through the new one.
Meanwhile `publishing` is False (ingress's admission answers 503, and the /ready of ingress and of the
stages too). If the replacement cannot start, or fails in turn within PRODUCER_RETRY_WINDOW_S, the task that
met it ends with ProducerLost, and the process with it (both tasks are `essential`): its supervisor starts it
again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.messaging.kafka import CORRELATION_HEADER, new_producer, sender_alive
from shared.messaging.producer import Blame, ProducerFailed, ProducerKeeper, blame
from shared.messaging.topics import ORDER_STATUS, TopicSpec
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.metrics import OUTBOX_PARKED, OUTBOX_ROUND_SECONDS
from shared.runtime.tasks import cancel_and_wait, essential
from shared.store.db import FAILED, UNREACHABLE, exclusive

logger = get_logger(__name__)

RELAY_LOCK = 7_306_002  # pg advisory lock key: one relay publishes at a time
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """A message a transaction writes to the outbox: `payload` is the wire model's JSON."""

    topic: TopicSpec
    key: UUID
    payload: bytes
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A committed outbox row, as the statement that wrote it (or the relay) returns it."""

    id: int
    topic: str
    key: str
    payload: str
    correlation_id: str | None

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> OutboxRow:
        return cls(row["id"], row["topic"], row["key"], row["payload"], row["correlation_id"])


def message_arrays(messages: Sequence[Message]) -> tuple[list[str], list[str], list[str], list[str | None]]:
    """Column arrays for `unnest` (topic, key, payload, correlation_id)."""
    return (
        [m.topic.name for m in messages],
        [str(m.key) for m in messages],
        [m.payload.decode() for m in messages],
        [m.correlation_id for m in messages],
    )


DELETE_ROWS = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
PARK_ROWS = (
    "UPDATE outbox SET parked_at = now(), error = e.error"
    " FROM unnest($1::bigint[], $2::text[]) AS e(id, error) WHERE outbox.id = e.id"
)
# A row the relay may send: not parked, and no earlier row of its order parked (it would skip a seq).
SENDABLE = (
    "outbox.parked_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox p"
    " WHERE p.parked_at IS NOT NULL AND p.key = outbox.key AND p.id < outbox.id)"
)


@dataclass(frozen=True)
class Sent:
    """What a send round did: the rows Kafka acknowledged, and those it refused for good (with why)."""

    acked: list[OutboxRow]
    refused: list[tuple[OutboxRow, str]]


class Outbox:
    """Publishes committed outbox rows in order, deletes them once acknowledged, and relays what a dead
    writer left behind."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        settings: Settings,
        *,
        replacement: Callable[[Settings], AIOKafkaProducer] = new_producer,
    ) -> None:
        self._pool = pool
        self._keeper = ProducerKeeper(producer, settings, replacement=replacement)
        self._settings = settings
        self._fast_path = settings.outbox_fast_path
        self._queue: asyncio.Queue[list[OutboxRow]] = asyncio.Queue(maxsize=settings.outbox_queue_batches)
        self._timeout_s = settings.kafka_request_timeout_ms / 1000 * 2
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            essential(asyncio.create_task(self._send_forever(), name="outbox-sender")),
            essential(asyncio.create_task(self._relay_forever(), name="outbox-relay")),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self._keeper.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer rows go out through now (a replacement, once the first has failed)."""
        return self._keeper.producer

    @property
    def publishing(self) -> bool:
        """Whether rows can leave this process now: False while its producer is being replaced, once it could
        not be, and as soon as the producer's sender has ended (before any send notices)."""
        return self._keeper.publishing

    async def kafka_answers(self) -> object:
        """Ask Kafka for its metadata through the current producer's connections (admission's probe)."""
        return await self._keeper.producer.client.fetch_all_metadata()

    async def write(self, messages: Sequence[Message]) -> None:
        """Messages that change no order (a re-drive): into the table, then out like any other row."""
        if not messages:
            return
        arrays = message_arrays(messages)
        records = await self._pool.fetch(
            "INSERT INTO outbox (topic, key, payload, correlation_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
            " RETURNING id, topic, key, payload, correlation_id",
            *arrays,
        )
        await self.publish(sorted((OutboxRow.from_record(r) for r in records), key=lambda r: r.id))

    async def publish(self, rows: list[OutboxRow]) -> None:
        """Queue rows that just committed (waits while the queue is full: writers slow down with Kafka)."""
        if rows and self._fast_path:
            await self._queue.put(rows)

    async def _send_forever(self) -> None:
        # Commands acknowledged in the last round and not deleted yet: they go with the next round's DELETE
        # (one statement a round instead of two while rounds follow each other), or at once when no round
        # is waiting. A crash before that leaves them to the relay: a repeated command is a no-op (seq).
        acked_commands: list[int] = []
        while True:
            if acked_commands and self._queue.empty():
                await self._delete_quietly(acked_commands)
                acked_commands = []
            batch = await self._queue.get()
            while not self._queue.empty() and len(batch) < 2000:
                batch.extend(self._queue.get_nowait())
            carried, acked_commands = acked_commands, []
            try:
                with OUTBOX_ROUND_SECONDS.time():
                    acked_commands = await self._publish(
                        batch, self._pool, carried=carried, defer_commands=True
                    )
            except ProducerFailed as failed:  # its rows stay in the table: the relay sends them
                await self._keeper.replace(failed)
            except (KafkaError, TimeoutError, *FAILED) as exc:
                # The rows stay in the table: the relay (or the next write of the same orders) sends them.
                logger.warning("outbox.send_failed", rows=len(batch), error=repr(exc))

    async def _delete_quietly(self, ids: list[int]) -> None:
        try:
            await self._pool.execute(DELETE_ROWS, ids)
        except FAILED as exc:  # the relay sends them again; readers drop repeats
            logger.warning("outbox.delete_failed", rows=len(ids), error=repr(exc))

    async def _publish(
        self,
        rows: Sequence[OutboxRow],
        db: asyncpg.Pool | asyncpg.Connection,
        *,
        carried: Sequence[int] = (),
        defer_commands: bool = False,
    ) -> list[int]:
        """Status events first, acknowledged and deleted (with any `carried` ids), then the commands that
        came with them: by the time a stage sees a command, the event before it is on `order.status` and out
        of the table, so that stage's write (which sends any older event of its order still in the table)
        does not repeat it. With `defer_commands`, the commands' ids are returned for the caller to delete
        later instead of deleted now."""
        events = [row for row in rows if row.topic == ORDER_STATUS.name]
        commands = [row for row in rows if row.topic != ORDER_STATUS.name]
        done = list(carried)
        held: set[str] = set()  # orders with a row refused: their later rows wait behind it
        if events:
            sent = await self._send(events, held)
            done += [row.id for row in sent.acked]
            await self._park(sent.refused, db)
        if done:
            await db.execute(DELETE_ROWS, done)
        if not commands:
            return []
        sent = await self._send(commands, held)
        await self._park(sent.refused, db)
        ids = [row.id for row in sent.acked]
        if defer_commands:
            return ids
        await db.execute(DELETE_ROWS, ids)
        return []

    async def _send(self, rows: Sequence[OutboxRow], held: set[str]) -> Sent:
        """Send in order and wait for every acknowledgement (a row published twice is dropped by seq). A row
        Kafka refuses for good is left out, and so are the later rows of its order (and of orders already in
        `held`, which this adds to); a refusal that may pass (the broker away, a timeout) fails the round,
        and one that is the producer's raises ProducerFailed (`blame`)."""
        producer = self._keeper.producer
        if not sender_alive(producer):
            raise ProducerFailed(producer, "the producer's sender task has ended")
        pending: list[tuple[OutboxRow, asyncio.Future[object]]] = []
        refused: list[tuple[OutboxRow, str]] = []
        for row in sorted(rows, key=lambda r: r.id):
            if row.key in held:
                continue
            headers = [(CORRELATION_HEADER, row.correlation_id.encode())] if row.correlation_id else []
            try:
                sending = await producer.send(
                    self._settings.topic(row.topic),
                    value=row.payload.encode(),
                    key=row.key.encode(),
                    headers=headers,
                )
            except KafkaError as exc:
                self._refuse_or_raise(producer, row, exc, refused, held)
                continue
            pending.append((row, sending))
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(sending for _, sending in pending), return_exceptions=True), self._timeout_s
            )
        except TimeoutError:
            if not sender_alive(producer):  # cancelled, it fails nothing: its sends wait forever
                raise ProducerFailed(producer, "the producer's sender task has ended") from None
            raise
        acked = []
        for (row, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, KafkaError):
                self._refuse_or_raise(producer, row, outcome, refused, held)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                acked.append(row)
        return Sent(acked, refused)

    @staticmethod
    def _refuse_or_raise(
        producer: AIOKafkaProducer,
        row: OutboxRow,
        error: KafkaError,
        refused: list[tuple[OutboxRow, str]],
        held: set[str],
    ) -> None:
        """A row Kafka refused: set it aside with its order if the refusal is the row's, else raise."""
        match blame(error):
            case Blame.ROW:
                refused.append((row, repr(error)))
                held.add(row.key)
            case Blame.PRODUCER:
                raise ProducerFailed(producer, repr(error)) from error
            case Blame.NOBODY:
                raise error

    async def _park(
        self, refused: list[tuple[OutboxRow, str]], db: asyncpg.Pool | asyncpg.Connection
    ) -> None:
        if not refused:
            return
        for row, error in refused:
            logger.error("outbox.row_parked", outboxId=row.id, topic=row.topic, orderId=row.key, error=error)
        OUTBOX_PARKED.inc(len(refused))
        await db.execute(PARK_ROWS, [row.id for row, _ in refused], [error for _, error in refused])

    async def relay_once(self) -> int:
        """Publish one batch of abandoned rows if no other relay is at it; returns how many."""
        async with exclusive(self._pool, RELAY_LOCK) as conn:
            if conn is None:
                return 0
            records = await conn.fetch(
                "SELECT id, topic, key, payload, correlation_id FROM outbox"
                " WHERE created_at <= clock_timestamp() - make_interval(secs => $1::float8 / 1000)"
                f" AND {SENDABLE} ORDER BY id LIMIT $2",
                self._settings.outbox_relay_grace_ms,
                self._settings.outbox_batch_size,
            )
            rows = [OutboxRow.from_record(r) for r in records]
            if rows:
                await self._publish(rows, conn)
                logger.info("outbox.relayed", rows=len(rows))
            return len(rows)

    async def _relay_forever(self) -> None:
        interval_s = self._settings.outbox_poll_interval_ms / 1000
        backoff = interval_s
        while True:
            started = time.monotonic()
            try:
                relayed = await self.relay_once()
            except ProducerFailed as failed:
                await self._keeper.replace(failed)
                continue
            except (KafkaError, TimeoutError, *UNREACHABLE) as exc:
                logger.warning("outbox.relay_failed", error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception as exc:  # the relay must outlive any one bad batch; say so loudly and go on
                logger.error("outbox.relay_error", error=repr(exc), exc_info=exc)
                await asyncio.sleep(MAX_BACKOFF_S)
                continue
            backoff = interval_s
            if relayed < self._settings.outbox_batch_size:
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
