"""Batch delivery of the resources topic inside faust's fetch loop.

faust hands every consumed record to its agent one at a time: its fetch loop awaits
``wait_first(callback(message), suspend_flow.wait())`` per record (several tasks and futures),
the conductor decodes it into an event and queues it on the agent's channel, the stream takes
it off the queue, runs its sensors, and acks it on the next iteration. That path costs about
200 us of CPU per record, several times what evaluating a typical object costs.

:func:`install` replaces the consumer's fetch loop (the coroutine that faust's ``Fetcher``
service awaits) with one that keeps faust's bookkeeping for every record, as faust's own loop
does it: the read offset per partition, the gaps that a compacted topic leaves between
offsets, ``commit_every`` and acks. The records of one topic are then collected per fetched
batch and handed to a synchronous handler as the Kafka client's records (faust's message per
record is skipped), and acked together once it returns; records of every other
topic (table changelogs, internal topics) go through faust's callback exactly as before, unless
``take`` (optional) takes them: it is given each such record first and returns whether it dealt
with it itself (the evaluate app applies global tables' changelog records this way once their
recovery is over). After each batch handed to the handler, the loop awaits ``pace`` (optional)
before it goes on: the app waits there until its publisher has room.
The fetch itself is faust's ``getmany`` minus its per-record monitor calls. Commits and
rebalances stay faust's: a record is committed once acked, and what is left of a batch when a
rebalance begins (the flow stopped) or has happened (the generation moved) is dropped unacked,
as faust's own loop stops there (the partition's owner reads it again).

This depends on faust-streaming's consumer internals (pinned in ``constraints.txt``):
``install`` checks every attribute it uses and raises if one is missing, so an upgrade that
changes them fails the evaluate tests instead of silently falling back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify

__all__ = ["HANDLE_AT_MOST", "REQUIRED", "install"]

HANDLE_AT_MOST = 500
"""Records handed to the handler at once; the event loop runs between two such chunks."""
REQUIRED = (
    "_drain_messages",
    "_committed_offset",
    "_acked_index",
    "_acked",
    "_waiting_for_ack",
    "_wait_next_records",
    "_to_message",
    "_buffered_partitions",
    "_read_offset",
    "_add_gap",
    "_commit_every",
    "_n_acked",
    "_stopped",
    "flow_active",
    "should_stop",
    "perform_seek",
    "seek",
    "highwater",
    "callback",
    "commit",
    "wait_first",
    "suspend_flow",
    "app",
)
"""The consumer attributes the replacement loop relies on."""

Handler = Callable[[Sequence[Any]], None]
Taker = Callable[[Any], bool]
Pacer = Callable[[], Awaitable[None]]


def install(
    consumer: Any,
    *,
    topic: str,
    handle: Handler,
    take: Taker | None = None,
    pace: Pacer | None = None,
) -> None:
    """Make ``consumer`` (faust's) hand ``topic``'s records to ``handle`` in batches.

    ``handle`` receives the Kafka client's records (``topic``, ``partition``, ``offset``,
    ``key``, ``value``, ``headers``; not faust messages) in offset order per partition. It
    must deal with every record itself (dead-letter what it cannot process): when it
    returns, they are acked.
    ``take`` sees the records of every other topic first; those it returns true for never
    reach faust's callback. ``pace`` is awaited after each batch that ``handle`` took.
    """
    missing = [name for name in REQUIRED if not hasattr(consumer, name)]
    if missing:
        raise RuntimeError(
            f"faust's consumer lacks {', '.join(missing)}: the evaluate fast path needs the "
            "faust-streaming version pinned in constraints.txt"
        )

    async def drain(fetcher: Any) -> None:
        await _drain(consumer, fetcher, topic=topic, handle=handle, take=take, pace=pace)

    consumer._drain_messages = drain


async def _drain(
    consumer: Any,
    fetcher: Any,
    *,
    topic: str,
    handle: Handler,
    take: Taker | None = None,
    pace: Pacer | None = None,
) -> None:
    callback = consumer.callback
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    acked_topic = acks_enabled_for(topic)
    app = consumer.app
    while not (consumer_stopped() or fetcher_stopped()):
        batch: list[tuple[Any, Any]] = []  # (partition, record) of ``topic``, in fetch order
        await asyncio.sleep(0)
        generation, fetched = await _fetch(consumer, topic)
        for tp, records in fetched:
            if tp.topic == topic:
                # The whole partition's records at once: the same checks as below, without
                # faust's per-record message and ack (``_ack`` acks a chunk at once).
                last = read_offset[tp]
                for record in records:
                    offset = record.offset
                    if last is not None and offset < last:
                        continue  # already read (faust's loop drops these too)
                    if last is not None and offset - last > 1 and acked_topic:
                        # Compaction removed the offsets in between: without a gap record the
                        # committed offset could never move past them. The gap is exactly the
                        # missing offsets (faust's ``_add_gap`` includes its end). One that
                        # also held the record's own offset, acked as well, put that offset
                        # twice in faust's list of acked offsets, and each commit then moved
                        # past one gap at most: a bench run's commit stayed 3,500 behind.
                        # (faust's own loop also misses a gap right after offset 0.)
                        await consumer._add_gap(tp, last + 1, offset - 1)
                    batch.append((tp, record))
                    last = read_offset[tp] = offset
                continue
            for message in records:
                offset = message.offset
                last = read_offset[tp]
                if last is not None and offset < last:
                    continue  # already read (faust's loop drops these too)
                if last is not None and offset - last > 1 and acks_enabled_for(message.topic):
                    # Compaction removed the offsets in between (as above).
                    await consumer._add_gap(tp, last + 1, offset - 1)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if take is not None and take(message):
                    pass  # dealt with (acks are not enabled for changelogs: nothing to ack)
                else:
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                read_offset[tp] = offset
        for start in range(0, len(batch), HANDLE_AT_MOST):
            if app.consumer_generation_id != generation or not consumer.flow_active:
                # A rebalance began since this batch was fetched (faust stops the flow when
                # partitions are revoked, and the generation moves when they are assigned):
                # its partitions may be another worker's by now, which reads them from the
                # committed offsets. Handled here, they would be handled twice, and this
                # worker's late writes could land after their new owner's. Unacked, they are
                # read again by whoever owns them (every assignment resets the positions).
                for tp, _ in batch[start:]:
                    read_offset.pop(tp, None)
                break
            chunk = batch[start : start + HANDLE_AT_MOST]
            handle([record for _, record in chunk])
            if acked_topic:
                _ack(consumer, chunk)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
            if pace is not None:
                await pace()
            await asyncio.sleep(0)


def _ack(consumer: Any, chunk: Sequence[tuple[Any, Any]]) -> None:
    # faust's ``Consumer.ack`` for every record of a chunk at once, under the same lock:
    # each offset not committed yet is marked acked once, and a waiter for acks is woken.
    with ack_lock:
        committed_offset = consumer._committed_offset
        acked_index = consumer._acked_index
        acked = consumer._acked
        counted = 0
        for tp, record in chunk:
            offset = record.offset
            committed = committed_offset[tp]
            if committed is None or offset >= committed:
                index = acked_index[tp]
                if offset not in index:
                    index.add(offset)
                    acked[tp].append(offset)
                    counted += 1
        consumer._n_acked += counted
        notify(consumer._waiting_for_ack)


async def _fetch(consumer: Any, topic: str) -> tuple[int, list[tuple[Any, Sequence[Any]]]]:
    # faust's ``Consumer.getmany`` without its per-record work that only feeds its monitor (a
    # high-water lookup per record costs more than decoding the record): the same wait for
    # records, the same filter on active partitions, the same seek when flow stopped meanwhile.
    # Also the consumer generation the records were fetched in, read as soon as the wait is
    # over, as faust does: the wait can span a whole rebalance, and records fetched after it
    # come from the positions the new assignment set. Dropped as if they were older, they
    # would be lost: nothing resets those positions again (a test run lost the first record
    # a partition got after a worker joined).
    # Records of ``topic`` stay the consumer's own records (the handler reads only their
    # topic, partition, offset, key, value and headers): faust's message and ack per record
    # cost about 12 us of the event loop's CPU each (measured with a handler that does
    # nothing). Every other topic's become faust messages.
    records, active = await consumer._wait_next_records(1.0)
    generation: int = consumer.app.consumer_generation_id
    if not records or consumer.should_stop:
        return generation, []
    if not consumer.flow_active:
        # A rebalance stopped the flow while fetching: faust seeks back to the committed
        # offsets and drops what it fetched, and so do we. That seek leaves a partition with
        # nothing committed where the fetch left it, past the dropped records, which nobody
        # would then read (a test run lost the first record a partition got while its new
        # owner recovered): each partition goes back to its first dropped record first.
        await _seek_back(consumer, records)
        with contextlib.suppress(Exception):
            await consumer.perform_seek()
        return generation, []
    buffered = consumer._buffered_partitions
    to_message = consumer._to_message
    track_end = consumer.app.monitor.track_tp_end_offset
    out: list[tuple[Any, Sequence[Any]]] = []
    paused: dict[Any, list[Any]] = {}
    for tp, batch in records.items():
        if active is not None and tp not in active and tp not in buffered:
            paused[tp] = batch  # fetched just as it was paused: read again once resumed
            continue
        track_end(tp, consumer.highwater(tp))
        if tp.topic == topic:
            out.append((tp, batch))
        else:
            out.append((tp, [to_message(tp, record) for record in batch]))
    await _seek_back(consumer, paused)
    return generation, out


async def _seek_back(consumer: Any, records: Mapping[Any, Sequence[Any]]) -> None:
    # Fetched records that are dropped unread: their partitions go back to the first of them.
    for tp, batch in records.items():
        if batch:
            with contextlib.suppress(Exception):  # not assigned any more: its owner reads it
                await consumer.seek(tp, batch[0].offset)
