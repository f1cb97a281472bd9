"""Consuming: read findings, hand them to the dispatcher, commit what is decided and audited.

The loop never waits for a finding to be decided: it reads, submits each finding under its
object's key (so one object's findings keep their order) and polls again. Offsets are committed
per partition up to the oldest finding not yet decided and audited (``committing``), so a crash
redelivers everything after it, and the idempotency ledger turns what was already decided
into audited no-ops. When too many findings are in flight (a long pause parks them all) the
partitions are paused, not the loop: polling goes on so the consumer keeps its group membership.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Protocol

import aiokafka.errors

from kposture.remediate import committing, dispatching
from kposture.schemas import codec, findings

log = logging.getLogger(__name__)

POLL_MS = 500
MAX_IN_FLIGHT = 1000
"""Findings read but not yet decided, beyond which reading stops (memory stays bounded)."""


class Source(Protocol):
    """The part of ``aiokafka.AIOKafkaConsumer`` the loop uses (fakes implement it in tests)."""

    async def getmany(self, *, timeout_ms: int) -> Mapping[Any, list[Any]]: ...

    async def commit(self, offsets: Mapping[Any, int]) -> None: ...

    def assignment(self) -> set[Any]: ...

    def pause(self, *partitions: Any) -> None: ...

    def resume(self, *partitions: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class Read:
    """One finding read from a partition, on its way to a decision."""

    partition: Hashable
    offset: int
    finding: findings.Finding


Decide = Callable[[findings.Finding], Awaitable[None]]
"""Decide and audit one finding; raises :class:`errors.WouldWaitError` to be parked."""

DecideFast = Callable[[findings.Finding], Awaitable[bool]]
"""Decide and audit one finding without a slot when that is cheap; False to go the slow way."""


class FindingsLoop:
    """The consume loop of the remediate service."""

    def __init__(
        self,
        source: Source,
        *,
        decide: Decide,
        decode: Callable[[Any], findings.Finding],
        wanted: Callable[[findings.Finding], bool],
        dead_letter: Callable[[Any, str], Awaitable[None]],
        slots: dispatching.Slots,
        max_in_flight: int = MAX_IN_FLIGHT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fast: DecideFast | None = None,
    ) -> None:
        self.source = source
        self._decide = decide
        self._fast = fast
        self._decode = decode
        self._wanted = wanted
        self._dead_letter = dead_letter
        self._slots = slots
        self.max_in_flight = max_in_flight
        self._sleep = sleep
        self.offsets: committing.OffsetTracker[Hashable] = committing.OffsetTracker()
        self._paused = False

    async def run(self) -> None:
        """Read, dispatch and commit until cancelled."""
        dispatcher: dispatching.Dispatcher[Read] = dispatching.Dispatcher(
            self._work,
            slots=self._slots,
            on_done=self._done,
            sleep=self._sleep,
            fast=self._fast_work if self._fast is not None else None,
        )
        async with dispatcher:
            while True:
                await self.poll_once(dispatcher)

    async def poll_once(self, dispatcher: dispatching.Dispatcher[Read]) -> None:
        """One round: apply back-pressure, read what arrived, submit it, commit what is done."""
        self._pace()
        batches = await self.source.getmany(timeout_ms=POLL_MS)
        for partition, messages in batches.items():
            for message in messages:
                self.offsets.read(partition, message.offset)
                await self._submit(dispatcher, partition, message)
        await self.commit()

    async def _submit(
        self, dispatcher: dispatching.Dispatcher[Read], partition: Hashable, message: Any
    ) -> None:
        try:
            finding = self._decode(message)
        except codec.DecodeError as exc:
            await self._dead_letter(message, exc.reason)
            self.offsets.done(partition, message.offset)
            return
        if not self._wanted(finding):
            self.offsets.done(partition, message.offset)
            return
        # The same key as the remediator's lock: one object's findings, in the order read.
        key = f"{finding.cluster}/{finding.ref.uid}"
        dispatcher.submit(key, Read(partition, message.offset, finding))

    async def _work(self, read: Read) -> None:
        await self._decide(read.finding)

    async def _fast_work(self, read: Read) -> bool:
        assert self._fast is not None
        return await self._fast(read.finding)

    def _done(self, read: Read) -> None:
        self.offsets.done(read.partition, read.offset)

    async def commit(self) -> None:
        """Commit each assigned partition up to its oldest finding not yet decided."""
        offsets = self.offsets.to_commit(self.source.assignment())
        if not offsets:
            return
        try:
            await self.source.commit(offsets)
        except aiokafka.errors.CommitFailedError as exc:
            # A rebalance took partitions away meanwhile; their new owner starts from the
            # last commit and the ledger makes what we decided since a no-op. Retried next poll.
            log.warning("commit failed, will retry: %s", exc)
            return
        self.offsets.committed(offsets)

    def _pace(self) -> None:
        over = self.offsets.in_flight() >= self.max_in_flight
        if over and not self._paused:
            log.warning("%d findings in flight: reading paused", self.offsets.in_flight())
        if over:
            # Every round: a rebalance may have assigned partitions that are not paused yet.
            self.source.pause(*self.source.assignment())
            self._paused = True
        elif self._paused:
            self.source.resume(*self.source.assignment())
            self._paused = False
