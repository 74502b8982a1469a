"""The outbox's producer and its health: whose failure a send's error is (`blame`), and the one producer a
process's `Outbox` sends through, replaced when it fails as a producer (`ProducerKeeper`).

A refusal is the row's only when Kafka refuses that record and would refuse it from any producer (ROW_ERRORS):
the outbox parks the row. A failure that is the producer's (ProducerFailed) parks nothing: the keeper closes
the producer and starts a new one with `new_producer`, once however many tasks met the failure, and says
the process is not publishing meanwhile. If the replacement cannot start, or fails in turn within
PRODUCER_RETRY_WINDOW_S, it raises ProducerLost: the task that met it ends, and the process with it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
    RecordListTooLargeError,
)

from shared.messaging.kafka import new_producer, sender_alive
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger

logger = get_logger(__name__)

PRODUCER_RETRY_WINDOW_S = 60.0  # a replacement producer failing sooner than this: the process gives up

# What Kafka refuses for the record itself, whichever producer sends it, while the producer goes on sending
# others: a record past the producer's or the broker's size limit (a batch past the broker's, which only
# an oversized record fills), a topic name Kafka cannot have. Of aiokafka's other errors a send can meet,
# those it marks `retriable` (a leader moving, the broker away, an unknown topic: a restarted broker
# answers that for every topic until its metadata is back), KafkaTimeoutError (the producer's buffer did not
# take the record in time) and ProducerClosed (the producer stopped under the round: a shutdown, or a
# replacement) may pass if tried again, and any other is the producer's: ProducerFenced,
# OutOfOrderSequenceNumber, the authorization refusals, a sender that died ("Unexpected error during batch
# delivery"), CorruptRecordException and InvalidTimestampError (a corrupted request, a producer's clock:
# the same row from another producer passes), and whatever aiokafka or Kafka add later.
ROW_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)
TRANSIENT_ERRORS: tuple[type[KafkaError], ...] = (KafkaTimeoutError, ProducerClosed)


class Blame(enum.Enum):
    """Whose failure a send's error is."""

    ROW = "row"  # park the row
    NOBODY = "nobody"  # the round fails; its rows stay in the table and go out later
    PRODUCER = "producer"  # replace the producer


def blame(error: BaseException) -> Blame:
    """Whose failure `error` (raised by a send, or by its acknowledgement) is: see ROW_ERRORS."""
    if isinstance(error, ROW_ERRORS):
        return Blame.ROW
    if isinstance(error, KafkaError) and not error.retriable and not isinstance(error, TRANSIENT_ERRORS):
        return Blame.PRODUCER
    return Blame.NOBODY


class ProducerFailed(Exception):
    """`producer` can send nothing more: it must be replaced. No row is to blame."""

    def __init__(self, producer: AIOKafkaProducer, error: str) -> None:
        super().__init__(error)
        self.producer = producer


class ProducerLost(Exception):
    """The producer could not be replaced, or its replacement failed too: this process cannot publish."""


class ProducerKeeper:
    """Holds the producer an outbox sends through, and replaces it when it fails (`replace`)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        settings: Settings,
        *,
        replacement: Callable[[Settings], AIOKafkaProducer] = new_producer,
    ) -> None:
        self._producer = producer
        self._settings = settings
        self._replacement = replacement
        self._replacing = asyncio.Lock()
        self._replaced_at: float | None = None  # when this keeper last started a producer of its own
        self._own: AIOKafkaProducer | None = None  # that producer: this keeper stops it
        self._can_publish = True  # False while the producer is being replaced, and once it could not be
        self._timeout_s = settings.kafka_request_timeout_ms / 1000 * 2

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer rows go out through now (a replacement, once the first has failed)."""
        return self._producer

    @property
    def publishing(self) -> bool:
        """Whether rows can leave this process now: False while its producer is being replaced, once it could
        not be, and as soon as the producer's sender has ended (before any send notices)."""
        return self._can_publish and sender_alive(self._producer)

    async def stop(self) -> None:
        """Stop the producer this keeper started, if any: the one it was given is its owner's to stop."""
        if self._own is not None:
            await self._own.stop()

    async def replace(self, failed: ProducerFailed) -> None:
        """Replace the failed producer by a new one, once (the sender and the relay may both meet the same
        failure). Raises ProducerLost if the new one cannot start, or if the failed one was itself started
        here less than PRODUCER_RETRY_WINDOW_S ago."""
        async with self._replacing:
            if failed.producer is not self._producer:
                return  # already replaced
            self._can_publish = False
            if self._replaced_at is not None:
                age_s = time.monotonic() - self._replaced_at
                if age_s < PRODUCER_RETRY_WINDOW_S:
                    logger.error("outbox.producer_lost", error=str(failed), replacementAgeS=round(age_s, 1))
                    raise ProducerLost(f"the replacement producer failed after {age_s:.0f} s: {failed}")
            logger.error("outbox.producer_failed", error=str(failed))
            await self._stop_quietly(failed.producer)  # whatever it still held is in the table
            producer = self._replacement(self._settings)
            try:
                await asyncio.wait_for(producer.start(), self._timeout_s)
            except (KafkaError, TimeoutError, OSError) as exc:
                await self._stop_quietly(producer)
                logger.error("outbox.producer_lost", error=f"no new producer: {exc!r}")
                raise ProducerLost(f"could not start a new producer: {exc!r}") from exc
            except asyncio.CancelledError:  # stopped meanwhile: close what it had opened
                await self._stop_quietly(producer)
                raise
            self._producer = self._own = producer
            self._replaced_at = time.monotonic()
            self._can_publish = True
            logger.warning("outbox.producer_replaced", failure=str(failed))

    async def _stop_quietly(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            logger.warning("outbox.producer_stop_failed", error=repr(exc))
