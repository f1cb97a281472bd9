"""The audit chain: continuation from the last event, and detection of altered records."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from remediate_fakes import NOW

from kposture.remediate import auditing
from kposture.schemas import audit, common

REF = common.ObjectRef("apps/v1", "Deployment", "web", "u1", "shop", "7")


def _event(n: int) -> audit.AuditEvent:
    return auditing.new_event(
        audit.Action.PLANNED,
        audit.Outcome.NONE,
        rationale=f"event {n}",
        cluster="c1",
        ref=REF,
        finding_key="c1/u1/pss-baseline/privileged",
        check="privileged",
        action_id="a1",
        started_at=NOW,
    )


def test_a_restarted_auditor_continues_the_chain_from_the_last_event() -> None:
    """A new Chain built from the last event seals seq n+1 linked to its hash."""
    first = auditing.Chain(None)
    events = [first.seal(_event(n)) for n in range(3)]
    restarted = auditing.Chain(events[-1])
    events.append(restarted.seal(_event(3)))
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert events[3].prev_hash == events[2].hash
    records = [auditing.Record(offset=i, event=e) for i, e in enumerate(events)]
    assert auditing.verify(records) is None


def test_verify_names_the_altered_record() -> None:
    """Changing a field of one record breaks the chain at exactly that record."""
    chain = auditing.Chain(None)
    events = [chain.seal(_event(n)) for n in range(4)]
    events[2] = msgspec.structs.replace(events[2], rationale="nothing to see")
    broken = auditing.verify([auditing.Record(i, e) for i, e in enumerate(events)])
    assert broken is not None
    assert broken.startswith("offset 2: seq 2")
    assert "altered" in broken


def test_verify_names_a_missing_record_and_an_undecodable_one() -> None:
    """A gap in seq and a record that is not an audit event are both reported."""
    chain = auditing.Chain(None)
    events = [chain.seal(_event(n)) for n in range(4)]
    gap = [auditing.Record(i, e) for i, e in enumerate([events[0], events[1], events[3]])]
    assert "missing" in (auditing.verify(gap) or "")
    junk = [auditing.Record(0, events[0]), auditing.Record(1, None, "malformed JSON")]
    assert (auditing.verify(junk) or "").startswith("offset 1: altered")


class _Producer:
    """An aiokafka producer that acknowledges sends after all of them were handed over."""

    def __init__(self, *, fail_at: int | None = None) -> None:
        self.sent: list[bytes] = []
        self.fail_at = fail_at

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_at is not None and len(self.sent) >= self.fail_at:
            future.set_exception(RuntimeError("broker down"))
        else:
            self.sent.append(record["value"])
            future.set_result(None)
        return future


async def test_a_batch_is_sealed_in_order_and_a_failure_keeps_the_tip_at_the_last_sent() -> None:
    """record_many links every event after the previous one; on failure the tip goes back."""
    producer = _Producer()
    auditor = auditing.KafkaAuditor(
        producer,  # type: ignore[arg-type]
        "audit",
        chain=auditing.Chain(None),
    )
    sealed = await auditor.record_many([_event(n) for n in range(3)])
    assert [e.seq for e in sealed[:3]] == [0, 1, 2]
    assert auditing.verify([auditing.Record(i, e) for i, e in enumerate(sealed[:3])]) is None
    assert len(producer.sent) == 3
    assert (await auditor.record_many([_event(3)]))[0].seq == 3
    producer.fail_at = 5
    with pytest.raises(RuntimeError):
        await auditor.record_many([_event(n) for n in range(3, 6)])
    assert auditor.chain.last is not None
    assert auditor.chain.last.seq == 4  # the last one that went out before the failure


async def test_the_batcher_publishes_events_recorded_meanwhile_together_in_order() -> None:
    """Events recorded while a batch is out go in the next one; every caller gets its event."""
    publishes: list[int] = []

    class Sink:
        def __init__(self) -> None:
            self.chain = auditing.Chain(None)

        async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
            return (await self.record_many([event]))[0]

        async def record_many(self, events: Sequence[audit.AuditEvent]) -> list[audit.AuditEvent]:
            publishes.append(len(events))
            await asyncio.sleep(0.01)
            return [self.chain.seal(e) for e in events]

    batcher = auditing.AuditBatcher(Sink())
    sealed = await asyncio.gather(*(batcher.record(_event(n)) for n in range(100)))
    assert [e.rationale for e in sealed] == [f"event {n}" for n in range(100)]
    assert [e.seq for e in sealed] == list(range(100))
    assert publishes == [100]
