"""The resources topic in a consumer group, each partition committed in its own transactions.

``Stream`` runs aiokafka's consumer in the event loop (no thread, no framework between): it
hands each fetched chunk of a partition's records to the ``Handler`` synchronously, together
with that partition's ``PartitionWriter``, and a committer task commits every partition that
has something to commit, one transaction per partition, while handling goes on.

Assignment: for each new partition, its transactional producer is started first (which fences
its previous owner and aborts what that owner left open), then the handler restores the
partition's state from its changelog, then records flow. Revocation: what the revoked
partitions' writers hold is committed, their producers closed, their state dropped. A
transaction that fails is aborted, and the partition is reset: its state restored from the
changelog and its position moved back to its committed offset, so its records are handled
again against the state they were first handled against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from kposture.evaluate.stream import transactions
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod

log = logging.getLogger(__name__)

FETCH_MAX_RECORDS = 2000
"""Records one fetch returns at most; a chunk is handled without yielding to the loop."""
PENDING_MAX = 20_000
"""Records put but not yet committed, beyond which fetching waits for the committer."""
RETRY_S = 1.0
"""How long to wait before restoring again a partition whose restore failed."""
COMMIT_EVERY_S = 0.05
"""How long the committer waits for more work after a commit before committing again."""


class Handler(Protocol):
    """What the app does with partitions and their records."""

    async def assigned(self, partitions: set[int]) -> None:
        """Restore the state of ``partitions`` (their producers are started and fenced)."""

    def revoked(self, partitions: set[int]) -> None:
        """Drop the state of ``partitions``: another worker may own them now."""

    def handle(self, records: Sequence[Any], writer: transactions.PartitionWriter) -> None:
        """Handle a chunk of one partition's records, in offset order, putting outputs."""


class Stream:
    """A consumer group member on one topic, with a transactional writer per partition."""

    def __init__(
        self,
        settings: settings_mod.Settings,
        *,
        topic: str,
        group_id: str,
        handler: Handler,
        readiness: health.Readiness,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.readiness = readiness
        self.writers: dict[int, transactions.PartitionWriter] = {}
        """The writer of every partition this worker owns and has restored."""
        self.generation = 0
        """Moves at every assignment and revocation: work started before it moved is stale."""
        self.handled = 0
        """Records handled so far."""
        self._consumer = kafka.consumer(
            settings.kafka,
            group_id=group_id,
            client_id=f"{group_id}-consumer",
            max_poll_records=FETCH_MAX_RECORDS,
            session_timeout_ms=int(settings.evaluate.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.evaluate.session_timeout_s * 1000 / 4),
        )
        self._work = asyncio.Event()  # something to commit
        self._reset: set[int] = set()  # partitions whose transaction failed
        self._unopened: set[int] = set()  # assigned partitions whose restore failed
        self._assigned = asyncio.Event()
        # Serialises what opens and closes writers (the rebalance callbacks and the recovery
        # after a failed transaction), so a recovery never reopens a partition revoked meanwhile.
        self._moving = asyncio.Lock()

    @property
    def owned(self) -> set[int]:
        """The partitions this worker owns and has restored."""
        return set(self.writers)

    async def start(self) -> None:
        """Join the group; ``wait_assigned`` tells when the assignment is restored."""
        await self._consumer.start()
        listener = _Listener(revoked=self._revoked, assigned=self._assigned_now)
        self._consumer.subscribe([self.topic], listener=listener)

    async def wait_assigned(self) -> None:
        """Return once this worker's latest assignment has been restored (no rebalance is
        under way for it)."""
        await self._assigned.wait()

    async def run(self) -> None:
        """Fetch, handle and commit until cancelled."""
        committer = asyncio.create_task(self._commit_loop(), name="evaluate-commit")
        try:
            while True:
                fetched = await self._consumer.getmany(timeout_ms=1000)
                for tp, records in fetched.items():
                    writer = self.writers.get(tp.partition)
                    if writer is None or tp.partition in self._reset:
                        # Not restored yet, or being reset: read these again once it is.
                        if tp in self._consumer.assignment():
                            self._consumer.seek(tp, records[0].offset)
                        continue
                    try:
                        self.handler.handle(records, writer)
                    except Exception as exc:  # reported, and nothing is skipped
                        # Part of the chunk's outputs may be in the writer: the partition is
                        # restored and read again from its committed offset, as after an abort.
                        log.exception("handling partition %d failed; restoring it", tp.partition)
                        self.readiness.report(
                            f"partition-{tp.partition}", ok=False, detail=repr(exc), critical=False
                        )
                        self._reset.add(tp.partition)
                        continue
                    writer.consumed(records[-1].offset)
                    self.handled += len(records)
                if fetched:
                    self._work.set()
                if self._reset or self._unopened:
                    await self._recover()
                if sum(w.pending for w in self.writers.values()) > PENDING_MAX:
                    await self.flush()
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    def touched(self) -> None:
        """A writer got records outside ``handle`` (a sweep): commit them soon."""
        self._work.set()

    async def flush(self) -> None:
        """Commit everything put so far (of partitions still owned)."""
        await self._commit(list(self.writers.items()))

    async def stop(self) -> None:
        """Commit what is pending and leave the group (which revokes, and so closes writers)."""
        with contextlib.suppress(transactions.TransactionError):
            await self.flush()
        await self._consumer.stop()
        await self._close(set(self.writers))

    async def _commit_loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            await self._commit(list(self.writers.items()))
            await asyncio.sleep(COMMIT_EVERY_S)  # let a few fetches gather into one transaction

    async def _commit(self, writers: Iterable[tuple[int, transactions.PartitionWriter]]) -> None:
        # A fenced writer's partition is in ``_reset`` already: it is replaced, not committed.
        due = [(p, w) for p, w in writers if w.dirty and not w.fenced]
        if not due:
            return
        results = await asyncio.gather(*(w.commit() for _, w in due), return_exceptions=True)
        for (partition, _), result in zip(due, results, strict=True):
            if isinstance(result, transactions.TransactionError):  # aborted or fenced
                log.warning("partition %d: %s; restoring it", partition, result)
                self._reset.add(partition)
            elif isinstance(result, BaseException):  # cancelled: the stream is stopping
                raise result

    async def _recover(self) -> None:
        async with self._moving:
            await self._recover_locked()

    async def _recover_locked(self) -> None:
        # A failed transaction left this worker's state ahead of the changelog: restore the
        # partition as a new assignment would (a new producer, which fences any other), and
        # read again from the offset the broker has committed. A fenced worker does the same:
        # a transaction timeout fences the owner itself; a true zombie is told by the
        # rebalance that follows. A partition whose restore failed is retried.
        resets, self._reset = self._reset & set(self.writers), set()
        if resets:
            self.generation += 1
            self.handler.revoked(resets)
            await self._close(resets)
        retry, self._unopened = (resets | self._unopened) & self._assigned_partitions(), set()
        if retry and not await self._try_open(retry):
            await asyncio.sleep(RETRY_S)

    async def _try_open(self, partitions: set[int]) -> bool:
        # Whether ``partitions`` were opened; if not, the run loop tries again.
        try:
            await self._open(partitions)
        except Exception:
            log.warning(
                "partitions %s could not be restored; retrying", sorted(partitions), exc_info=True
            )
            self._unopened |= partitions
            return False
        return True

    def _assigned_partitions(self) -> set[int]:
        return {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}

    def _assigned_tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        assigned = self._consumer.assignment()
        return [tp for p in partitions if (tp := TopicPartition(self.topic, p)) in assigned]

    async def _open(self, partitions: set[int]) -> None:
        # Producers first: starting one fences the partition's previous owner and settles
        # its open transaction, so the committed offsets and the changelog read after it are
        # final and agree. (The offsets the consumer fetched on assignment may predate that
        # settlement; ``committed`` asks the broker again.) The writers are registered right
        # after the handler's restore returns, with no wait between, so work the handler
        # queued meanwhile finds them.
        made = {p: self._writer(p) for p in sorted(partitions)}
        try:
            await asyncio.gather(*(w.producer.start() for w in made.values()))  # type: ignore[attr-defined]
            for tp in self._assigned_tps(made):
                offset = await self._consumer.committed(tp)
                if offset is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, offset)
            await self.handler.assigned(set(made))
        except BaseException:
            self.handler.revoked(set(made))  # whatever was restored of them
            await self._stop_producers(made.values())
            raise
        self.writers.update(made)
        self.readiness.report("partitions", ok=True, detail=f"{len(self.writers)} assigned")

    async def _close(self, partitions: set[int]) -> None:
        closing = [self.writers.pop(p) for p in partitions if p in self.writers]
        for writer in closing:
            writer.discard()
        await self._stop_producers(closing)

    @staticmethod
    async def _stop_producers(writers: Iterable[transactions.PartitionWriter]) -> None:
        await asyncio.gather(*(w.producer.stop() for w in writers), return_exceptions=True)

    def _writer(self, partition: int) -> transactions.PartitionWriter:
        producer = kafka.transactional_producer(
            self.settings.kafka,
            transactional_id=f"{self.group_id}-{self.topic}-{partition}",
            client_id=f"{self.group_id}-{partition}",
        )
        return transactions.PartitionWriter(
            producer, source=TopicPartition(self.topic, partition), group_id=self.group_id
        )

    async def _revoked(self, tps: Iterable[TopicPartition]) -> None:
        async with self._moving:
            await self._revoked_locked(tps)

    async def _revoked_locked(self, tps: Iterable[TopicPartition]) -> None:
        partitions = {tp.partition for tp in tps if tp.topic == self.topic}
        self.generation += 1
        self._assigned.clear()  # set again once the next assignment is restored
        owned = [(p, self.writers[p]) for p in sorted(partitions) if p in self.writers]
        try:
            await self._commit(owned)  # ends the open work with its offsets, as it stands
        except Exception:
            log.warning("commit on revocation failed", exc_info=True)
        self.handler.revoked(partitions)
        await self._close(partitions)
        self._reset -= partitions
        self._unopened -= partitions

    async def _assigned_now(self, tps: Iterable[TopicPartition]) -> None:
        async with self._moving:
            await self._assigned_locked(tps)

    async def _assigned_locked(self, tps: Iterable[TopicPartition]) -> None:
        partitions = {tp.partition for tp in tps if tp.topic == self.topic}
        self.generation += 1
        stale = set(self.writers) - partitions
        if stale:  # revoked without a revocation (this worker had left the group)
            self.handler.revoked(stale)
            await self._close(stale)
        await self._try_open(partitions - set(self.writers))
        self._assigned.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, handed to the stream's own coroutines."""

    def __init__(
        self,
        *,
        revoked: Callable[[Iterable[TopicPartition]], Awaitable[None]],
        assigned: Callable[[Iterable[TopicPartition]], Awaitable[None]],
    ) -> None:
        self.revoked = revoked
        self.assigned = assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.assigned(assigned)
