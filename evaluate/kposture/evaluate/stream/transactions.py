"""One input partition's outputs and offsets, committed together in one Kafka transaction.

Each partition of the resources topic has its own transactional producer, with the
transactional id ``<app id>-<topic>-<partition>``. Whoever is assigned the partition starts
that producer, which fences every earlier producer of the id (Kafka Streams' first
exactly-once mode): a paused previous owner that wakes up after the rebalance cannot commit
anything, and whatever transaction it left open is aborted. aiokafka's
``send_offsets_to_transaction`` takes no group generation, so this is what fences zombies.

Records are appended to open aiokafka batches as they are put (a C call per record) and sent
when the partition commits: ``commit`` swaps the buffer, so handling goes on into the next one
while a transaction is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiokafka.errors import ProducerFenced
from aiokafka.structs import TopicPartition

from kposture.evaluate.stream import publishing

log = logging.getLogger(__name__)


class TransactionError(Exception):
    """A partition's transaction did not commit; nothing of it is visible downstream.

    ::

        TransactionError
        ├── FencedError         (another worker owns the partition now; not retriable)
        └── CommitFailedError   (aborted; retriable once the partition is restored)
    """

    retriable = False


class FencedError(TransactionError):
    """A newer producer of the same transactional id exists: the partition moved on."""


class CommitFailedError(TransactionError):
    """The broker refused or lost part of the transaction, which was aborted."""

    retriable = True


class TransactionalProducer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` (with a transactional id) that is used."""

    def create_batch(self) -> publishing.Batch:
        """An empty batch."""

    async def send_batch(
        self, batch: publishing.Batch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        """Queue a batch inside the open transaction."""

    async def begin_transaction(self) -> None:
        """Open a transaction."""

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        """Add the group's consumed offsets to the open transaction."""

    async def commit_transaction(self) -> None:
        """Commit the open transaction."""

    async def abort_transaction(self) -> None:
        """Abort the open transaction."""

    async def stop(self) -> None:
        """Close the producer."""


class PartitionWriter:
    """Buffers one input partition's outputs; ``commit`` makes them and its offset visible."""

    def __init__(
        self, producer: TransactionalProducer, *, source: TopicPartition, group_id: str
    ) -> None:
        self.producer = producer
        self.source = source
        self.group_id = group_id
        self._batches: dict[tuple[str, int], list[publishing.Batch]] = {}
        self._consumed: int | None = None  # the last input offset handled, not yet committed
        self._records = 0
        self._lock = asyncio.Lock()
        self.fenced = False
        self.committed = 0
        """Transactions committed so far."""

    @property
    def pending(self) -> int:
        """Records put since the last commit began (0 with only an offset to commit)."""
        return self._records

    @property
    def dirty(self) -> bool:
        """Whether there is anything to commit: records or a consumed offset."""
        return self._records > 0 or self._consumed is not None

    def put(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: publishing.Headers,
        partition: int,
    ) -> None:
        """Add one record to the next transaction, behind those put before it."""
        where = (topic, partition)
        batches = self._batches.get(where)
        if batches is None:
            batches = self._batches[where] = [self.producer.create_batch()]
        if batches[-1].append(timestamp=None, key=key, value=value, headers=headers) is None:
            batches.append(self.producer.create_batch())
            if batches[-1].append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds the batch size")
        self._records += 1

    def consumed(self, offset: int) -> None:
        """The input record at ``offset`` was handled: commit its offset with the outputs."""
        self._consumed = offset

    def discard(self) -> None:
        """Forget what was put and consumed since the last commit (the partition is reset)."""
        for batches in self._batches.values():
            for batch in batches:
                batch.close()
        self._batches = {}
        self._consumed = None
        self._records = 0

    async def commit(self) -> int:
        """Commit what was put so far with the consumed offset; the records it committed.

        Raises ``FencedError`` when another worker owns the partition now,
        ``CommitFailedError`` when the transaction was aborted. Either way, nothing of it is
        visible to ``read_committed`` consumers and the consumed offset did not move.
        """
        async with self._lock:  # one transaction at a time per producer
            if self.fenced:
                raise FencedError(f"{self.source} belongs to another worker")
            if not self.dirty:
                return 0
            batches, self._batches = self._batches, {}
            consumed, self._consumed = self._consumed, None
            records, self._records = self._records, 0
            try:
                await self.producer.begin_transaction()
                sent = []
                for (topic, partition), queued in batches.items():
                    for batch in queued:
                        batch.close()
                        future = await self.producer.send_batch(batch, topic, partition=partition)
                        future.add_done_callback(_retrieved)
                        sent.append(future)
                if consumed is not None:
                    offsets = {self.source: consumed + 1}
                    await self.producer.send_offsets_to_transaction(offsets, self.group_id)
                await asyncio.gather(*sent)
                await self.producer.commit_transaction()
            except ProducerFenced as exc:
                self.fenced = True
                raise FencedError(f"{self.source} belongs to another worker") from exc
            except Exception as exc:  # any failure aborts; the caller restores the partition
                # Besides the broker's errors, aiokafka raises assertions and IllegalOperation
                # from a producer whose transaction state went wrong: it is replaced too.
                await self._abort()
                raise CommitFailedError(f"transaction of {self.source} aborted: {exc!r}") from exc
            self.committed += 1
            return records

    async def _abort(self) -> None:
        # Whatever the abort says, the caller replaces this writer and its producer.
        try:
            await self.producer.abort_transaction()
        except ProducerFenced:
            self.fenced = True
        except Exception as exc:  # noqa: BLE001 - a producer in a fatal state is replaced
            log.warning("abort of %s failed, the producer is replaced: %r", self.source, exc)


def _retrieved(future: asyncio.Future[Any]) -> None:
    # A batch's failure is the transaction's, reported by ``commit``: it needs no log of its own.
    if not future.cancelled():
        future.exception()
