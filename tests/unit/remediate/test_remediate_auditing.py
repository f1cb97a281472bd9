"""The audit chain: continuation from the last event, and detection of altered records."""

from __future__ import annotations

import msgspec
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
