"""The transactional writer on the real broker: fencing, atomicity and aborts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from kposture.evaluate.stream import consuming, transactions
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _topics(settings: settings_mod.Settings, *names: str, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(n, num_partitions=1, replication_factor=1, topic_configs=configs)
                for n in names
            ]
        )
    finally:
        await admin.close()


async def _writer(settings: settings_mod.Settings, source: str, txn_id: str) -> Any:
    producer = kafka.transactional_producer(
        settings.kafka, transactional_id=txn_id, client_id="test-writer"
    )
    await producer.start()
    return transactions.PartitionWriter(
        producer, source=TopicPartition(source, 0), group_id=f"{source}-group"
    )


async def _committed_values(settings: settings_mod.Settings, topic: str) -> list[bytes]:
    consumer = kafka.consumer(settings.kafka, group_id=None, client_id="test-reader")
    await consumer.start()
    seen: list[bytes] = []
    try:
        await kafka.read_to_end(
            consumer, [TopicPartition(topic, 0)], lambda rs: seen.extend(r.value for r in rs)
        )
    finally:
        await consumer.stop()
    return seen


async def _group_offset(settings: settings_mod.Settings, source: str) -> int | None:
    consumer = kafka.consumer(settings.kafka, group_id=f"{source}-group", client_id="test-offsets")
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(source, 0))
    finally:
        await consumer.stop()


async def test_a_partitions_new_owner_fences_the_old_one_whose_writes_never_show(
    settings: settings_mod.Settings,
) -> None:
    """A paused old owner that resumes after the partition moved cannot commit anything."""
    source, out = f"{settings.kafka.topic_prefix}-in", f"{settings.kafka.topic_prefix}-out"
    await _topics(settings, source, out)
    txn_id = f"{source}-0"
    old = await _writer(settings, source, txn_id)
    old.put(out, key=b"k", value=b"old-1", headers=[], partition=0)
    old.consumed(0)
    assert await old.commit() == 1
    old.put(out, key=b"k", value=b"old-2", headers=[], partition=0)  # then it pauses
    old.consumed(1)
    new = await _writer(settings, source, txn_id)  # the rebalance gave the partition away
    new.put(out, key=b"k", value=b"new-2", headers=[], partition=0)
    new.consumed(1)
    await new.commit()
    with pytest.raises(transactions.FencedError):
        await old.commit()  # the old owner wakes up
    assert old.fenced
    assert await _committed_values(settings, out) == [b"old-1", b"new-2"]
    assert await _group_offset(settings, source) == 2
    for writer in (old, new):
        await writer.producer.stop()
    # The fenced producer leaves failed futures of its own behind; collected here, while no
    # code is being compiled (CPython 3.11 can fail an AST parse that a finaliser interrupts).
    del old, new
    gc.collect()


async def test_a_transaction_the_broker_refuses_is_aborted_and_moves_no_offset(
    settings: settings_mod.Settings,
) -> None:
    """One refused record aborts the whole batch: no output of it shows, the offset stays."""
    source, out = f"{settings.kafka.topic_prefix}-in", f"{settings.kafka.topic_prefix}-out"
    small = f"{settings.kafka.topic_prefix}-small"
    await _topics(settings, source, out)
    await _topics(settings, small, **{"max.message.bytes": "1024"})
    writer = await _writer(settings, source, f"{source}-{uuid.uuid4().hex[:6]}")
    writer.put(out, key=b"k", value=b"first", headers=[], partition=0)
    writer.consumed(0)
    await writer.commit()
    writer.put(out, key=b"k", value=b"lost", headers=[], partition=0)
    writer.put(small, key=b"k", value=b"x" * 4096, headers=[], partition=0)
    writer.consumed(1)
    with pytest.raises(transactions.CommitFailedError):
        await writer.commit()
    assert not writer.fenced
    assert await _group_offset(settings, source) == 1
    writer.put(out, key=b"k", value=b"again", headers=[], partition=0)  # handled again
    writer.consumed(1)
    await writer.commit()
    assert await _committed_values(settings, out) == [b"first", b"again"]
    assert await _committed_values(settings, small) == []
    assert await _group_offset(settings, source) == 2
    await writer.producer.stop()


class _FailingOnce:
    """A stream handler that copies each record to ``out`` and fails once at ``fail_at``."""

    def __init__(self, out: str, *, fail_at: int) -> None:
        self.out = out
        self.fail_at = fail_at
        self.failed = False
        self.restored: list[set[int]] = []

    async def assigned(self, partitions: set[int]) -> None:
        self.restored.append(partitions)

    def revoked(self, partitions: set[int]) -> None:
        pass

    def handle(self, records: Any, writer: transactions.PartitionWriter) -> None:
        for record in records:
            writer.put(self.out, key=record.key, value=record.value, headers=[], partition=0)
            if record.offset == self.fail_at and not self.failed:
                self.failed = True
                raise RuntimeError("a handler bug")


async def test_a_chunk_whose_handling_fails_is_read_again_from_the_committed_offset(
    settings: settings_mod.Settings,
) -> None:
    """Outputs put before the failure are dropped; every record's output commits once.

    The failure comes after a first transaction committed offsets in the same assignment:
    the partition is read again from those, not from where the assignment began.
    """
    source, out = f"{settings.kafka.topic_prefix}-in", f"{settings.kafka.topic_prefix}-out"
    await _topics(settings, source, out)
    producer = kafka.producer(settings.kafka, client_id="test-input")
    await producer.start()
    values = [f"r{n}".encode() for n in range(300)]
    handler = _FailingOnce(out, fail_at=200)
    stream = consuming.Stream(
        settings,
        topic=source,
        group_id=f"{source}-group",
        handler=handler,
        readiness=health.Readiness(),
    )
    await stream.start()
    running = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(60):
            for part, done in ((values[:150], 150), (values[150:], 300)):
                await asyncio.gather(
                    *[await producer.send(source, value=v, key=b"k") for v in part]
                )
                while await _group_offset(settings, source) != done:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await stream.stop()
        await producer.stop()
    assert handler.failed
    assert len(handler.restored) >= 2  # the first assignment, then the restore after the failure
    assert await _committed_values(settings, out) == values
