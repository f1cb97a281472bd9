"""The publisher: Kafka's partition per key, per-partition order, nothing lost or held back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as reference_murmur2

from kposture.evaluate.stream import publishing


class FakeBatch:
    """A batch that holds ``size`` records."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: publishing.Headers,
    ) -> object | None:
        """Add a record unless full or closed."""
        if self.closed or len(self.records) >= self.size:
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        """Refuse further records."""
        self.closed = True


class FakeProducer:
    """Records the batches it is handed, in order, per (topic, partition)."""

    def __init__(self, batch_size: int = 3) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, FakeBatch]] = []

    def create_batch(self) -> FakeBatch:
        """A new empty batch."""
        return FakeBatch(self.batch_size)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        """Take the batch; it is acknowledged at once."""
        self.sent.append((topic, partition, batch))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def partitions_for(self, topic: str) -> Iterable[int]:
        """Six partitions per topic."""
        return {0, 1, 2, 3, 4, 5}

    async def flush(self) -> None:
        """Nothing is pending after ``send_batch``."""


def test_murmur2_equals_kafkas() -> None:
    """The hash (so the partition) of any key is the Java client's and aiokafka's."""
    rng = random.Random(3)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(90)))
        assert publishing.murmur2(data) == reference_murmur2(data)


async def test_records_keep_their_order_per_partition_across_full_batches() -> None:
    """Every record is published once, to its key's partition, in the order it was put."""
    producer = FakeProducer(batch_size=3)
    publisher = publishing.Publisher(producer)
    await publisher.prepare(["findings"])
    put = [(f"k{n % 7}".encode(), str(n).encode()) for n in range(50)]
    for key, value in put:
        publisher.put("findings", key=key, value=value, headers=[])
    await publisher.flush()
    for partition in range(6):
        expected = [(k, v) for k, v in put if (reference_murmur2(k) & 0x7FFFFFFF) % 6 == partition]
        got = [r for _, p, batch in producer.sent if p == partition for r in batch.records]
        assert got == expected
    assert publisher.partition_for("findings", b"k1") == (reference_murmur2(b"k1") & 0x7FFFFFFF) % 6


async def test_explicit_partitions_and_tombstones_pass_through() -> None:
    """A changelog write goes to the partition it names; a ``None`` value stays a tombstone."""
    producer = FakeProducer()
    publisher = publishing.Publisher(producer)
    publisher.put("changelog", key=b"c/u", value=None, headers=[], partition=4)
    await publisher.flush()
    assert [(t, p, b.records) for t, p, b in producer.sent] == [("changelog", 4, [(b"c/u", None)])]


async def test_the_background_sender_publishes_without_a_flush() -> None:
    """Batches leave within the linger time even when nobody flushes."""
    producer = FakeProducer()
    publisher = publishing.Publisher(producer, linger_s=0.001)
    await publisher.prepare(["findings"])
    task = asyncio.create_task(publisher.run())
    publisher.put("findings", key=b"k", value=b"v", headers=[])
    for _ in range(100):
        if producer.sent:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    assert [b.records for _, _, b in producer.sent] == [[(b"k", b"v")]]


async def test_an_idle_sender_sleeps_until_a_record_comes_then_sends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No timer ticks while nothing waits to be sent; a record after a quiet spell still leaves."""
    producer = FakeProducer()
    publisher = publishing.Publisher(producer, linger_s=0.001)
    await publisher.prepare(["findings"])
    waits = 0
    real_linger = publishing.Publisher._linger

    async def counting_linger(self: publishing.Publisher) -> None:
        nonlocal waits
        waits += 1
        await real_linger(self)

    monkeypatch.setattr(publishing.Publisher, "_linger", counting_linger)
    task = asyncio.create_task(publisher.run())
    await asyncio.sleep(0.05)  # 50 linger periods of nothing
    assert waits == 0
    for round_ in range(2):
        publisher.put("findings", key=b"k%d" % round_, value=b"v", headers=[])
        for _ in range(100):
            if len(producer.sent) > round_:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # quiet again
    task.cancel()
    assert [b.records for _, _, b in producer.sent] == [[(b"k0", b"v")], [(b"k1", b"v")]]
    assert waits <= 4  # a linger wait per record (two), not one per period


async def test_a_cancel_as_a_batch_fills_stops_the_sender() -> None:
    """Cancelled in the very turn of the loop that wakes it, the sender still stops.

    (On Python 3.11, ``asyncio.wait_for`` returns normally when the awaited wait ends as the
    task is cancelled: the cancellation was lost and a worker's stop waited for ever.)
    """
    producer = FakeProducer(batch_size=3)
    publisher = publishing.Publisher(producer, linger_s=10.0)
    await publisher.prepare(["findings"])
    task = asyncio.create_task(publisher.run())
    publisher.put("findings", key=b"k0", value=b"v", headers=[], partition=0)
    await asyncio.sleep(0.01)  # the sender lingers, waiting for the batch to fill
    for n in range(1, 4):  # fills it, which wakes the sender...
        publisher.put("findings", key=b"k%d" % n, value=b"v", headers=[], partition=0)
    task.cancel()  # ...and it is cancelled before it runs again
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done == {task}, "the cancelled sender is still running"
    assert task.cancelled()


async def test_wait_room_holds_the_caller_until_the_producer_took_the_backlog() -> None:
    """A caller that puts faster than the producer takes batches is held back, not buffered."""

    class SlowProducer(FakeProducer):
        def __init__(self) -> None:
            super().__init__(batch_size=1)
            self.gate = asyncio.Event()

        async def send_batch(
            self, batch: Any, topic: str, *, partition: int
        ) -> asyncio.Future[Any]:
            await self.gate.wait()  # the broker is busy until the gate opens
            return await super().send_batch(batch, topic, partition=partition)

    producer = SlowProducer()
    publisher = publishing.Publisher(producer, linger_s=60)  # only a full batch wakes it
    await publisher.prepare(["findings"])
    sender = asyncio.create_task(publisher.run())
    for n in range(10):
        publisher.put("findings", key=b"k%d" % n, value=b"v", headers=[])
    await publisher.wait_room(20)  # room enough: returns at once
    waiter = asyncio.create_task(publisher.wait_room(3))
    await asyncio.sleep(0.02)
    assert not waiter.done()  # nine full batches wait for a producer that takes none
    producer.gate.set()
    await asyncio.wait_for(waiter, timeout=5)
    await publisher.flush()
    sender.cancel()
    sent = [b.records[0][0] for _, _, b in producer.sent]
    assert sorted(sent) == sorted(b"k%d" % n for n in range(10))  # nothing lost


async def test_the_sender_outlives_a_refused_batch_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer that refuses batches for a while (an outage) delays records, in order."""

    class RefusingProducer(FakeProducer):
        def __init__(self) -> None:
            super().__init__(batch_size=2)
            self.refusals = 3

        async def send_batch(
            self, batch: Any, topic: str, *, partition: int
        ) -> asyncio.Future[Any]:
            if self.refusals:
                self.refusals -= 1
                raise TimeoutError("broker unreachable")
            return await super().send_batch(batch, topic, partition=partition)

    monkeypatch.setattr(publishing, "RETRY_S", 0.001)
    producer = RefusingProducer()
    publisher = publishing.Publisher(producer, linger_s=0.001)
    await publisher.prepare(["findings"])
    sender = asyncio.create_task(publisher.run())
    for n in range(5):
        publisher.put("findings", key=b"k", value=b"%d" % n, headers=[])
    for _ in range(200):
        if sum(len(b.records) for _, _, b in producer.sent) == 5:
            break
        await asyncio.sleep(0.005)
    assert not sender.done()
    sender.cancel()
    assert producer.refusals == 0
    assert [v for _, _, b in producer.sent for _, v in b.records] == [b"0", b"1", b"2", b"3", b"4"]
