"""The replacement fetch loop of ``batching``: faust's bookkeeping kept, one topic batched.

A small stand-in for faust's consumer records what the loop does with it; the loop itself
runs against the real faust consumer in the evaluate integration tests.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from intervaltree import IntervalTree

from kposture.evaluate import batching

RESOURCES = "p.resources.v1"
OTHER = "p-evaluate-sweep"


@dataclasses.dataclass(frozen=True)
class Tp:
    topic: str
    partition: int


@dataclasses.dataclass(eq=False)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes = b"k"
    value: bytes | None = b"v"

    @property
    def tp(self) -> Tp:
        return Tp(self.topic, self.partition)


class Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


class Monitor:
    def track_tp_end_offset(self, tp: Tp, offset: int) -> None:
        pass


class App:
    def __init__(self) -> None:
        self.topics = Topics()
        self.monitor = Monitor()
        self.consumer_generation_id = 1


class Stopped:
    def __init__(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag


class AckLog(list[int]):
    """One partition's acked offsets, as faust keeps them, also written to a shared log."""

    def __init__(self, tp: Tp, log: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.tp = tp
        self.log = log

    def append(self, offset: int) -> None:
        self.log.append((self.tp.topic, self.tp.partition, offset))
        super().append(offset)


class AckedOffsets(dict[Tp, AckLog]):
    def __init__(self, log: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.log = log

    def __missing__(self, tp: Tp) -> AckLog:
        made = self[tp] = AckLog(tp, self.log)
        return made


class FakeConsumer:
    """Yields the given fetches, one per ``getmany`` call, then stops the loop."""

    def __init__(self, fetches: list[list[Message]], *, rebalance_after: int | None = None):
        self.app = App()
        self.fetches = fetches
        self.rebalance_after = rebalance_after
        self._read_offset: dict[Tp, int | None] = collections.defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self._stopped = Stopped()
        self.suspend_flow = asyncio.Event()
        self.gaps: list[tuple[Tp, int, int]] = []
        self.acked: list[tuple[str, int, int]] = []  # in the order they were acked
        self._acked = AckedOffsets(self.acked)
        self._acked_index: dict[Tp, set[int]] = collections.defaultdict(set)
        self._committed_offset: dict[Tp, int | None] = collections.defaultdict(lambda: None)
        self._waiting_for_ack: asyncio.Future[None] | None = None
        self.delivered: list[tuple[str, int, int]] = []
        self._drain_messages = None
        self._buffered_partitions: set[Tp] = set()
        self.flow_active = True
        self.should_stop = False
        self.fetched = 0
        self.seeks = 0
        self.sought: list[tuple[int, int]] = []

    async def _wait_next_records(
        self,
        timeout: float,  # noqa: ASYNC109 - faust's signature
    ) -> tuple[dict[Tp, list[Message]], None]:
        if not self.fetches:
            self._stopped.flag = True
            return {}, None
        fetched: dict[Tp, list[Message]] = {}
        for message in self.fetches.pop(0):
            fetched.setdefault(message.tp, []).append(message)
        self.fetched += 1
        if self.rebalance_after == self.fetched:
            self.app.consumer_generation_id += 1
        return fetched, None

    def _to_message(self, tp: Tp, record: Message) -> Message:
        return record

    def highwater(self, tp: Tp) -> int:
        return 0

    async def perform_seek(self) -> None:
        self.seeks += 1

    async def seek(self, tp: Tp, offset: int) -> None:
        self.sought.append((tp.partition, offset))

    async def callback(self, message: Message) -> None:
        self.delivered.append((message.topic, message.partition, message.offset))

    async def _add_gap(self, tp: Tp, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> bool:
        return True

    async def wait_first(self, *coros: Any) -> None:
        first, *rest = coros
        await first
        for other in rest:
            other.close()


class Fetcher:
    def __init__(self) -> None:
        self._stopped = Stopped()


def _run(
    consumer: FakeConsumer,
    *,
    take: batching.Taker | None = None,
    pace: batching.Pacer | None = None,
) -> list[list[tuple[int, int]]]:
    handled: list[list[tuple[int, int]]] = []

    def handle(messages: Sequence[Message]) -> None:
        handled.append([(m.partition, m.offset) for m in messages])

    batching.install(consumer, topic=RESOURCES, handle=handle, take=take, pace=pace)
    assert consumer._drain_messages is not None
    asyncio.run(consumer._drain_messages(Fetcher()))
    return handled


def test_one_topic_is_handled_in_batches_and_acked_after_the_handler() -> None:
    consumer = FakeConsumer(
        [
            [Message(RESOURCES, 0, 0), Message(OTHER, 0, 0), Message(RESOURCES, 1, 0)],
            [Message(RESOURCES, 0, 1)],
        ]
    )
    handled = _run(consumer)
    assert handled == [[(0, 0), (1, 0)], [(0, 1)]]
    assert consumer.delivered == [(OTHER, 0, 0)]  # other topics: faust's own callback
    assert consumer.acked == [(RESOURCES, 0, 0), (RESOURCES, 1, 0), (RESOURCES, 0, 1)]


def test_records_that_take_deals_with_skip_fausts_callback_and_are_not_acked() -> None:
    changelog = "p-evaluate-inventory-changelog"
    consumer = FakeConsumer(
        [
            [Message(changelog, 0, 0), Message(OTHER, 0, 0), Message(RESOURCES, 0, 0)],
            [Message(changelog, 0, 1, value=None), Message(changelog, 1, 0)],
        ]
    )
    taken: list[tuple[int, int]] = []

    def take(message: Message) -> bool:
        if message.topic != changelog or message.partition != 0:
            return False
        taken.append((message.partition, message.offset))
        return True

    assert _run(consumer, take=take) == [[(0, 0)]]
    assert taken == [(0, 0), (0, 1)]
    assert consumer.delivered == [(OTHER, 0, 0), (changelog, 1, 0)]  # declined: faust's
    assert consumer.acked == [(RESOURCES, 0, 0)]
    assert consumer._read_offset[Tp(changelog, 0)] == 1  # read, as faust's loop records it


def test_the_loop_awaits_pace_after_each_chunk_before_it_reads_on() -> None:
    count = batching.HANDLE_AT_MOST + 1
    consumer = FakeConsumer(
        [[Message(RESOURCES, 0, i) for i in range(count)], [Message(RESOURCES, 0, count)]]
    )
    paced: list[int] = []

    async def pace() -> None:
        paced.append(len(consumer.acked))  # the chunk before was acked; no fetch since
        assert consumer.fetched == (1 if len(paced) < 3 else 2)

    _run(consumer, pace=pace)
    assert paced == [batching.HANDLE_AT_MOST, count, count + 1]


def test_offsets_that_compaction_removed_are_recorded_as_gaps() -> None:
    """A gap is exactly the missing offsets (faust's ``_add_gap`` includes both ends), also
    right after offset 0."""
    records = [(0, 3), (0, 9), (1, 0), (1, 2)]
    consumer = FakeConsumer([[Message(RESOURCES, p, offset)] for p, offset in records])
    _run(consumer)
    assert consumer.gaps == [(Tp(RESOURCES, 0), 4, 8), (Tp(RESOURCES, 1), 1, 1)]
    assert consumer._read_offset[Tp(RESOURCES, 0)] == 9


class FaustBookkeeping(FakeConsumer):
    """The stand-in with faust's own gap and commit bookkeeping (its ``Consumer`` methods)."""

    def __init__(self, fetches: list[list[Message]]) -> None:
        super().__init__(fetches)
        self._gap: dict[Tp, IntervalTree] = collections.defaultdict(IntervalTree)
        self._commit_every = 1  # the loop commits after every chunk
        self.commits: list[int] = []  # partition 0's committed offset after each commit

    async def _add_gap(self, tp: Tp, start: int, end: int) -> None:
        await faust_consumer.Consumer._add_gap(self, tp, start, end)  # type: ignore[arg-type]

    async def commit(self) -> bool:
        for tp in list(self._acked):
            offset = faust_consumer.Consumer._new_offset(self, tp)  # type: ignore[arg-type]
            if offset is not None and faust_consumer.Consumer._should_commit(self, tp, offset):  # type: ignore[arg-type]
                self._committed_offset[tp] = offset
        self.commits.append(self._committed_offset[Tp(RESOURCES, 0)] or 0)
        return True


def test_commits_move_past_every_gap_that_compaction_left() -> None:
    """On a partition that compaction thinned out, faust's commit bookkeeping (not a stand-in
    of it) reaches the end once the last chunk is acked: the committed offset never stalls
    at a gap, and never passes a record before it is handled."""
    rng = random.Random(7)
    offsets = sorted(rng.sample(range(5_000), 1_200))
    fetches = [
        [Message(RESOURCES, 0, offset) for offset in offsets[start : start + 700]]
        for start in range(0, len(offsets), 700)
    ]
    consumer = FaustBookkeeping(fetches)
    handled = _run(consumer)
    assert [offset for chunk in handled for _, offset in chunk] == offsets
    assert consumer._committed_offset[Tp(RESOURCES, 0)] == offsets[-1] + 1
    # After each chunk the commit is at most one past the last offset handled so far.
    ends = itertools.accumulate(len(chunk) for chunk in handled)
    assert len(consumer.commits) == len(handled)
    for commit, end in zip(consumer.commits, ends, strict=True):
        assert commit <= offsets[end - 1] + 1


def test_records_read_before_are_not_handled_again() -> None:
    consumer = FakeConsumer([[Message(RESOURCES, 0, 5)], [Message(RESOURCES, 0, 4)]])
    assert _run(consumer) == [[(0, 5)]]


def test_a_batch_fetched_before_a_rebalance_completed_is_dropped_unacked() -> None:
    # The assignment moves the generation while the loop awaits faust's callback for a record
    # of another topic: the resources records fetched with it are the previous generation's.
    consumer = FakeConsumer(
        [[Message(OTHER, 0, 0), Message(RESOURCES, 0, 0), Message(RESOURCES, 0, 1)]]
    )
    deliver = consumer.callback

    async def callback(message: Message) -> None:
        await deliver(message)
        consumer.app.consumer_generation_id += 1

    consumer.callback = callback  # type: ignore[method-assign]
    assert _run(consumer) == []
    assert consumer.acked == []
    assert consumer._read_offset[Tp(RESOURCES, 0)] is None  # the seek after recovery decides


def test_records_fetched_after_a_rebalance_completed_during_the_wait_are_handled() -> None:
    # The wait for records spanned a whole rebalance: what it returns comes from the positions
    # the new assignment set, and nothing would fetch it again if it were dropped.
    consumer = FakeConsumer(
        [[Message(RESOURCES, 0, 0), Message(RESOURCES, 0, 1)]], rebalance_after=1
    )
    assert _run(consumer) == [[(0, 0), (0, 1)]]
    assert consumer.acked == [(RESOURCES, 0, 0), (RESOURCES, 0, 1)]


def test_records_fetched_while_the_flow_stopped_are_dropped_and_the_consumer_seeks() -> None:
    consumer = FakeConsumer([[Message(RESOURCES, 0, 4), Message(RESOURCES, 0, 5)]])
    consumer.flow_active = False
    assert _run(consumer) == []
    assert consumer.acked == []
    assert consumer.seeks == 1  # faust's seek to the committed offsets
    # ... which does not move a partition with nothing committed: back to the first dropped.
    assert consumer.sought == [(0, 4)]


def test_records_of_a_partition_paused_meanwhile_are_read_again_once_it_resumes() -> None:
    consumer = FakeConsumer([[Message(RESOURCES, 0, 0), Message(RESOURCES, 1, 7)]])
    active = {Tp(RESOURCES, 0)}
    fetch = consumer._wait_next_records

    async def wait_next_records(timeout: float) -> tuple[dict[Tp, list[Message]], set[Tp]]:  # noqa: ASYNC109
        records, _ = await fetch(timeout)
        return records, active

    consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
    assert _run(consumer) == [[(0, 0)]]
    assert consumer.sought == [(1, 7)]


def test_what_is_left_of_a_batch_when_partitions_are_revoked_is_dropped_unacked() -> None:
    # Revocation stops the flow; the generation moves only at the next assignment. The chunk
    # handled before stays handled; the rest is another worker's to read.
    count = batching.HANDLE_AT_MOST + 3
    consumer = FakeConsumer([[Message(RESOURCES, 0, i) for i in range(count)]])

    async def pace() -> None:
        consumer.flow_active = False  # partitions revoked while the first chunk's outputs left

    handled = _run(consumer, pace=pace)
    assert [len(chunk) for chunk in handled] == [batching.HANDLE_AT_MOST]
    assert len(consumer.acked) == batching.HANDLE_AT_MOST
    assert consumer._read_offset[Tp(RESOURCES, 0)] is None  # read again from the committed offset


def test_large_batches_are_handed_over_in_chunks() -> None:
    count = batching.HANDLE_AT_MOST + 7
    consumer = FakeConsumer([[Message(RESOURCES, 0, i) for i in range(count)]])
    handled = _run(consumer)
    assert [len(chunk) for chunk in handled] == [batching.HANDLE_AT_MOST, 7]
    assert len(consumer.acked) == count


def test_install_refuses_a_consumer_without_the_internals_it_needs() -> None:
    class Bare:
        pass

    with pytest.raises(RuntimeError, match="_drain_messages"):
        batching.install(Bare(), topic=RESOURCES, handle=lambda messages: None)


def test_a_chunk_is_acked_as_fausts_ack_would_ack_each_record() -> None:
    """Offsets below the committed one and offsets acked already are left alone; the others
    are acked once, counted towards ``commit_every``, and a waiter for acks is woken."""

    async def scenario() -> FakeConsumer:
        consumer = FakeConsumer([])
        tp0, tp1 = Tp(RESOURCES, 0), Tp(RESOURCES, 1)
        consumer._committed_offset[tp0] = 5
        consumer._acked_index[tp1].add(2)
        consumer._acked[tp1].append(2)
        consumer.acked.clear()
        waiter = consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
        chunk = [(tp0, Message(RESOURCES, 0, n)) for n in (4, 5, 6)]
        chunk += [(tp1, Message(RESOURCES, 1, n)) for n in (2, 3)]
        batching._ack(consumer, chunk)
        assert waiter.done()
        return consumer

    consumer = asyncio.run(scenario())
    assert consumer.acked == [(RESOURCES, 0, 5), (RESOURCES, 0, 6), (RESOURCES, 1, 3)]
    assert consumer._n_acked == 3
    assert consumer._acked_index[Tp(RESOURCES, 1)] == {2, 3}
