"""Committing: which findings offsets may be committed while findings are decided out of order.

Findings are decided concurrently, and one may be parked (a backoff, a canary) long after later
ones finished. Committing a later offset would lose the parked finding on a crash, so each
partition keeps the offsets read but not yet decided and audited; the offset to commit is the
oldest of them (the low-water mark), or one past the newest read when none is pending. Pure
state: the caller reads, finishes and commits; tests drive it directly.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)
"""A partition (``aiokafka.TopicPartition`` in the service)."""


class _Partition:
    def __init__(self) -> None:
        # A multiset: after a rebalance the same offset can be read again while the first
        # delivery is still being decided; both must finish before it counts as done.
        self.pending: collections.Counter[int] = collections.Counter()
        self.next = 0  # one past the newest offset read
        self.committed = -1

    def low_water(self) -> int:
        return min(self.pending) if self.pending else self.next


class OffsetTracker(Generic[P]):
    """Per partition: the offsets read but not yet decided, and the last committed offset."""

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}

    def read(self, partition: P, offset: int) -> None:
        """A record at ``offset`` was read and is about to be decided."""
        part = self._partitions.setdefault(partition, _Partition())
        part.pending[offset] += 1
        part.next = max(part.next, offset + 1)

    def done(self, partition: P, offset: int) -> None:
        """The record at ``offset`` is decided and audited (or needs no decision)."""
        part = self._partitions.get(partition)
        if part is None or part.pending[offset] <= 0:
            return
        part.pending[offset] -= 1
        if part.pending[offset] <= 0:
            del part.pending[offset]

    def in_flight(self) -> int:
        """How many records are read but not yet decided, over all partitions."""
        return sum(part.pending.total() for part in self._partitions.values())

    def low_water(self, partition: P) -> int | None:
        """The offset a commit of ``partition`` may name now (None: nothing read yet)."""
        part = self._partitions.get(partition)
        return None if part is None else part.low_water()

    def to_commit(self, assigned: Iterable[P]) -> dict[P, int]:
        """The low-water marks of the ``assigned`` partitions that moved since their last commit.

        Partitions no longer assigned are left out: their offsets are another consumer's now.
        """
        offsets: dict[P, int] = {}
        for partition in assigned:
            part = self._partitions.get(partition)
            if part is not None and part.low_water() > part.committed:
                offsets[partition] = part.low_water()
        return offsets

    def committed(self, offsets: Mapping[P, int]) -> None:
        """The broker accepted a commit of ``offsets``."""
        for partition, offset in offsets.items():
            part = self._partitions.get(partition)
            if part is not None:
                part.committed = max(part.committed, offset)
