"""Publishing the evaluator's records: findings, posture, dead letters and table changelogs.

One event can open a dozen findings, and each also rewrites its object's changelog record, so
producing is the evaluator's hottest I/O. Sending record by record through faust costs about
150 us each (a future, a pending message, sensors, a partitioner in pure Python, a coroutine
per record), more than evaluating the object. The ``Publisher`` instead appends each record to
an open ``aiokafka`` batch of its (topic, partition), a C call of a few microseconds, and hands
batches to the producer when they fill up or every ``linger_s``.

Guarantees are those of a producer: ``acks=all``, idempotent, and one open batch per
partition, appended in call order, so each key's records stay in order. The caller must
``flush`` before it commits the offsets of the records whose outputs it put here (the app
runs ``flush`` inside faust's commit), so a crash redelivers rather than loses a finding.

``put`` never waits, so a caller that reads faster than the broker takes records must pace
itself with ``wait_room``: without it, full batches pile up in memory for as long as a
backlog lasts (a cold start of 20,000 objects left 1,400 batches, 24 MB, waiting).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How long the background sender waits after the producer refused a batch before it retries."""
QUEUED_BATCHES = 64
"""Full batches that may wait for the producer before ``wait_room`` holds the caller back."""
PARTITIONS_CACHED = 16_384
"""Keys whose partition is remembered: an object's findings keep their keys across updates."""

Headers = list[tuple[str, bytes]]


class Batch(Protocol):
    """An open record batch (``aiokafka``'s ``BatchBuilder``)."""

    def append(
        self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Headers
    ) -> object | None:
        """Add a record; ``None`` when the batch is full."""

    def close(self) -> None:
        """Refuse further records."""


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the publisher uses."""

    def create_batch(self) -> Batch:
        """An empty batch of the producer's batch size."""

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        """Queue a batch; the future resolves when the broker acknowledged it."""

    async def partitions_for(self, topic: str) -> Iterable[int]:
        """The partitions of a topic (waits for metadata)."""

    async def flush(self) -> None:
        """Wait until every queued batch was acknowledged."""


class Publisher:
    """Batches records per (topic, partition) and sends them without waiting for each."""

    def __init__(self, producer: Producer, *, linger_s: float = 0.005) -> None:
        self.producer = producer
        self.linger_s = linger_s
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._open: dict[tuple[str, int], Batch] = {}
        self._full: collections.deque[tuple[tuple[str, int], Batch]] = collections.deque()
        self._sent: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()  # a batch filled up: send now
        self._waiting = asyncio.Event()  # something is waiting to be sent
        self._room = asyncio.Event()  # a queued batch was handed to the producer
        self._lock = asyncio.Lock()

    async def prepare(self, topics: Iterable[str]) -> None:
        """Learn the partition counts of the topics that records are keyed into."""
        for topic in topics:
            self._partitions[topic] = list(await self.producer.partitions_for(topic))

    def put(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Add one record; ``partition=None`` picks the partition of ``key`` as Kafka's does."""
        if partition is None:
            partition = self.partition_for(topic, key)
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self.producer.create_batch()
            self._waiting.set()
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: it leaves in order, before the batch that takes this record.
            self._full.append((where, batch))
            batch = self._open[where] = self.producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds the batch size")
            self._wake.set()

    async def wait_room(self, batches: int = QUEUED_BATCHES) -> None:
        """Return once at most ``batches`` full batches wait to be handed to the producer."""
        while len(self._full) > batches:
            self._room.clear()
            self._wake.set()  # send now: the caller is waiting
            await self._room.wait()

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """The partition of ``key`` under the Java client's (and aiokafka's) default partitioner."""
        partitions = self._partitions[topic]
        if key is None:
            return partitions[0]
        found = self._partition_of.get((topic, key))
        if found is None:
            found = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            if len(self._partition_of) >= PARTITIONS_CACHED:
                self._partition_of.clear()  # bounded; cheaper than an LRU per record
            self._partition_of[(topic, key)] = found
        return found

    async def send(self) -> None:
        """Hand every batch to the producer (full ones first), without waiting for acks."""
        async with self._lock:  # two senders would interleave one partition's batches
            # Open batches queue up behind the full ones of their partition; a record put
            # while this sends goes to a new batch, behind them too.
            self._full.extend(self._open.items())
            self._open = {}
            while self._full:
                (topic, partition), batch = self._full[0]
                batch.close()
                future = await self.producer.send_batch(batch, topic, partition=partition)
                # Only now: cancelled before the producer took it, the batch stays queued.
                self._full.popleft()
                self._room.set()
                self._sent.add(future)
                future.add_done_callback(self._on_sent)

    async def flush(self) -> None:
        """Send everything put so far and wait until the broker acknowledged it."""
        await self.send()
        await self.producer.flush()

    async def run(self) -> None:
        """Send batches ``linger_s`` after a record came (at once when one fills up), until
        cancelled. An idle publisher sleeps until a record comes: no timer ticks meanwhile.

        A batch the producer refuses (the broker was unreachable for longer than its request
        timeout, say) stays first in line and is offered again ``RETRY_S`` later: the sender
        must outlive an outage, or nothing would leave the worker after it.
        """
        while True:
            if not (self._open or self._full):
                self._waiting.clear()
                await self._waiting.wait()
            await self._linger()
            self._wake.clear()
            if self._open or self._full:
                try:
                    await self.send()
                except Exception as exc:  # noqa: BLE001 - logged, and retried below
                    log.warning("the producer refused a batch, retrying: %s", exc)
                    await asyncio.sleep(RETRY_S)

    async def _linger(self) -> None:
        # Up to ``linger_s`` for the batch to fill. ``asyncio.timeout``, not ``wait_for``: on
        # Python 3.11, ``wait_for`` returns normally when the wait ends in the turn of the
        # loop that cancels the task, and the cancellation is lost (the worker never stops).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.linger_s):
                await self._wake.wait()

    def _on_sent(self, future: asyncio.Future[Any]) -> None:
        self._sent.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # aiokafka has retried already; this batch is lost, as faust's sends were.
            log.error("a batch could not be published: %s", future.exception())


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``aiokafka.partitioner.murmur2``, four times faster).

    The partition of a key must be the one every other Kafka client computes, so consumers
    that join by key (and remediate's per-key order) see one partition per key.
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    for word in struct.unpack_from(f"<{words}I", data):
        k = (word * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    base = words << 2
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h
