"""The consume loop with fakes: concurrency, per-object order, parking and low-water commits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import pytest
from remediate_fakes import FakeAuditor, FakeClock, FakeKube, FakeLedger, deployment, finding_for
from remediate_fakes import namespace as namespace_obj

from kposture.remediate import (
    auditing,
    committing,
    consuming,
    dispatching,
    errors,
    remediating,
    throttling,
)
from kposture.runtime import settings
from kposture.schemas import audit, common, findings, remediation

Phase = remediation.Phase
TP0, TP1 = ("findings", 0), ("findings", 1)
ENFORCE = {"kposture.io/mode": "enforce"}


@dataclasses.dataclass
class Message:
    """A record as the loop sees it (decode is a fake that returns ``finding``)."""

    offset: int
    finding: findings.Finding


class FakeSource:
    """A consumer: hands out the queued batches once, records commits, pause and resume."""

    def __init__(self, *batches: Mapping[Any, list[Message]]) -> None:
        self.batches = list(batches)
        self.commits: list[dict[Any, int]] = []
        self.assigned = {TP0, TP1}
        self.paused: set[Any] = set()

    async def getmany(self, *, timeout_ms: int) -> Mapping[Any, list[Message]]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.01)
        return {}

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        self.commits.append(dict(offsets))

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def pause(self, *partitions: Any) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: Any) -> None:
        self.paused.difference_update(partitions)

    def committed(self, partition: Any) -> int | None:
        """The last offset committed for ``partition``."""
        found = [c[partition] for c in self.commits if partition in c]
        return found[-1] if found else None


async def _no_dead_letters(message: Any, reason: str) -> None:
    raise AssertionError(f"unexpected dead letter: {reason}")


def _loop(
    source: FakeSource,
    decide: Callable[[findings.Finding], Awaitable[None]],
    *,
    slots: dispatching.Slots,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_in_flight: int = consuming.MAX_IN_FLIGHT,
) -> consuming.FindingsLoop:
    return consuming.FindingsLoop(
        source,
        decide=decide,
        decode=lambda message: message.finding,
        wanted=lambda finding: True,
        dead_letter=_no_dead_letters,
        slots=slots,
        sleep=sleep,
        max_in_flight=max_in_flight,
    )


@contextlib.asynccontextmanager
async def _running(loop: consuming.FindingsLoop) -> AsyncIterator[None]:
    task = asyncio.create_task(loop.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _service_account(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "shop"},
    }


def _status(obj: dict[str, Any], *, healthy: bool) -> dict[str, Any]:
    obj["status"] = {
        "observedGeneration": 99 if healthy else 0,  # 99: past any generation here
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
    }
    return obj


class SlowRolloutKube(FakeKube):
    """A cluster whose Deployments stay mid-rollout after our write until ``release`` is set."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        super().__init__(*objects)
        self.release = asyncio.Event()

    async def get(self, ref: common.ObjectRef) -> dict[str, Any] | None:
        found = await super().get(ref)
        if found is not None and found.get("kind") == "Deployment":
            written = found["metadata"]["generation"] > 1
            _status(found, healthy=self.release.is_set() or not written)
        return found


def _remediator(
    kube: FakeKube,
    slots: dispatching.Slots,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[remediating.Remediator, FakeAuditor]:
    config = msgspec.convert(
        {"patches_per_second": 100.0, "burst": 100}, settings.RemediateSettings
    )
    throttle = throttling.Throttle(config)
    throttle.kill_switch.stale_after_s = 1e9  # no ledger reader here: the view stays current
    throttle.kill_switch.heartbeat(clock())
    auditor = FakeAuditor()
    remediator = remediating.Remediator(
        config,
        clusters={"c1": kube},
        ledger=FakeLedger(),
        auditor=auditor,
        throttle=throttle,
        canary_soak_s=0.0,
        clock=clock,
        sleep=sleep,
        lend_slot=slots.lent,
    )
    return remediator, auditor


def _phase(remediator: remediating.Remediator, finding: findings.Finding) -> Phase | None:
    for action in remediator.ledger.ledger.decisions.values():
        if action.finding_key == finding.key:
            return action.phase
    return None


async def test_a_slow_canary_for_one_object_does_not_delay_another_objects_fix() -> None:
    """One slot: A's canary rollout waits, C (same check) parks on it, B's safe fix goes on."""
    kube = SlowRolloutKube(namespace_obj(labels=ENFORCE))
    a = kube.put(deployment("a", security={"privileged": True}))
    c = kube.put(deployment("c", security={"privileged": True}))
    b = kube.put(_service_account("bot"))
    slots = dispatching.Slots(1)
    remediator, _ = _remediator(kube, slots)
    fa, fc = finding_for(a), finding_for(c)
    fb = finding_for(b, check="automountServiceAccountToken", risk=findings.Risk.SAFE)

    async def decide(finding: findings.Finding) -> None:
        await remediator.handle(finding, park=True)

    source = FakeSource({TP0: [Message(0, fa), Message(1, fc), Message(2, fb)]})
    async with _running(_loop(source, decide, slots=slots)):
        await _until(lambda: _phase(remediator, fb) is Phase.VERIFIED)
        assert _phase(remediator, fa) is Phase.APPLIED  # the canary is still rolling out
        assert _phase(remediator, fc) is None  # parked before anything was recorded
        await _until(lambda: source.committed(TP0) is not None)
        assert source.committed(TP0) == 0  # A is the oldest undecided finding
        kube.release.set()
        await _until(lambda: _phase(remediator, fc) is Phase.VERIFIED)
        assert _phase(remediator, fa) is Phase.VERIFIED
        await _until(lambda: source.committed(TP0) == 3)
    assert slots.busy == 0


async def test_findings_of_the_same_object_are_decided_in_order_never_together() -> None:
    """A1 blocks: A2 waits behind it while B is decided; A2 starts only after A1 ends."""
    obj_a, obj_b = deployment("a"), deployment("b")
    obj_a["metadata"]["uid"], obj_b["metadata"]["uid"] = "uid-a", "uid-b"
    a1, a2 = finding_for(obj_a, check="privileged"), finding_for(obj_a, check="hostNamespaces")
    b1 = finding_for(obj_b)
    a1_may_end = asyncio.Event()
    log: list[str] = []

    async def decide(finding: findings.Finding) -> None:
        name = {a1.key: "a1", a2.key: "a2", b1.key: "b1"}[finding.key]
        log.append(f"{name} start")
        if finding is a1:
            await a1_may_end.wait()
        log.append(f"{name} end")

    source = FakeSource({TP0: [Message(0, a1), Message(1, a2)], TP1: [Message(0, b1)]})
    async with _running(_loop(source, decide, slots=dispatching.Slots(4))):
        await _until(lambda: "b1 end" in log)
        assert "a2 start" not in log
        a1_may_end.set()
        await _until(lambda: "a2 end" in log)
    assert log.index("a1 end") < log.index("a2 start")


async def test_offsets_are_committed_only_up_to_the_oldest_undecided_finding() -> None:
    """Offsets 1 and 2 are decided before 0: the commit stays at 0, then jumps to 3."""
    obj = deployment("x")
    release = asyncio.Event()
    first = finding_for({**obj, "metadata": {**obj["metadata"], "uid": "u0"}})
    later = [finding_for({**obj, "metadata": {**obj["metadata"], "uid": f"u{n}"}}) for n in (1, 2)]
    other = finding_for({**obj, "metadata": {**obj["metadata"], "uid": "u9"}})
    decided: list[str] = []

    async def decide(finding: findings.Finding) -> None:
        if finding is first:
            await release.wait()
        decided.append(finding.ref.uid)

    source = FakeSource(
        {TP0: [Message(0, first), Message(1, later[0]), Message(2, later[1])]},
        {TP1: [Message(7, other)]},
    )
    loop = _loop(source, decide, slots=dispatching.Slots(4))
    async with _running(loop):
        await _until(lambda: {"u1", "u2", "u9"} <= set(decided))
        await _until(lambda: source.committed(TP1) == 8)
        assert source.committed(TP0) == 0
        assert loop.offsets.low_water(TP0) == 0
        release.set()
        await _until(lambda: source.committed(TP0) == 3)


async def test_a_backoff_parks_the_finding_without_recording_and_retries_it_later() -> None:
    """A was just written: its finding parks (nothing audited), B goes on, then A is fixed."""
    kube = FakeKube(namespace_obj(labels=ENFORCE))
    a = kube.put(_status(deployment("a", security={"privileged": True}), healthy=True))
    b = kube.put(_service_account("bot"))
    clock = FakeClock()
    slots = dispatching.Slots(1)

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    remediator, auditor = _remediator(kube, slots, clock=clock, sleep=sleep)
    remediator.throttle.wrote("c1", a["metadata"]["uid"], clock())  # backoff: 2 s from now
    fa = finding_for(a)
    fb = finding_for(b, check="automountServiceAccountToken", risk=findings.Risk.SAFE)
    with pytest.raises(errors.WouldWaitError) as parked:
        await remediator.handle(fa, park=True)
    assert 0 < parked.value.retry_after_s <= 2.0
    assert auditor.events == []

    async def decide(finding: findings.Finding) -> None:
        await remediator.handle(finding, park=True)

    source = FakeSource({TP0: [Message(0, fa), Message(1, fb)]})
    async with _running(_loop(source, decide, slots=slots, sleep=sleep)):
        await _until(lambda: _phase(remediator, fa) is Phase.VERIFIED)
        await _until(lambda: source.committed(TP0) == 2)
    assert _phase(remediator, fb) is Phase.VERIFIED
    assert [kind for kind, _ in kube.writes] == ["apply", "apply"]


async def test_a_pause_parks_findings_without_rereading_the_cluster() -> None:
    """Paused: the finding parks on an in-memory check, and is fixed once resumed."""
    kube = FakeKube(namespace_obj(labels=ENFORCE))
    a = kube.put(_status(deployment("a", security={"privileged": True}), healthy=True))
    reads = 0
    real_get = kube.get

    async def counting_get(ref: common.ObjectRef) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        return await real_get(ref)

    kube.get = counting_get  # type: ignore[method-assign]
    slots = dispatching.Slots(1)
    remediator, auditor = _remediator(kube, slots)
    remediator.throttle.kill_switch.observe(paused=True, reason="incident")
    source = FakeSource({TP0: [Message(0, finding_for(a))]})
    async with _running(_loop(source, lambda f: _decided(remediator, f), slots=slots)):
        await asyncio.sleep(1.2)  # a few polls of the pause state
        assert reads <= 2  # the object and its namespace, read once
        assert auditor.events == []
        remediator.throttle.kill_switch.observe(paused=False)
        await _until(lambda: source.committed(TP0) == 1)
    assert [kind for kind, _ in kube.writes] == ["apply"]


async def _decided(remediator: remediating.Remediator, finding: findings.Finding) -> None:
    await remediator.handle(finding, park=True)


async def test_reading_pauses_when_too_many_findings_are_in_flight() -> None:
    """Back-pressure: partitions are paused at the cap and resumed when findings are decided."""
    release = asyncio.Event()
    obj = deployment("x")
    batch = [
        Message(n, finding_for({**obj, "metadata": {**obj["metadata"], "uid": f"u{n}"}}))
        for n in range(3)
    ]

    async def decide(finding: findings.Finding) -> None:
        await release.wait()

    source = FakeSource({TP0: batch})
    async with _running(_loop(source, decide, slots=dispatching.Slots(4), max_in_flight=3)):
        await _until(lambda: source.paused == {TP0, TP1})
        release.set()
        await _until(lambda: not source.paused)


def test_the_low_water_mark_counts_a_redelivered_offset_until_both_are_done() -> None:
    """After a rebalance the same offset may be in flight twice; it is done after both."""
    tracker: committing.OffsetTracker[str] = committing.OffsetTracker()
    tracker.read("p", 5)
    tracker.read("p", 5)
    tracker.read("p", 6)
    tracker.done("p", 6)
    tracker.done("p", 5)
    assert tracker.to_commit(["p"]) == {"p": 5}
    tracker.done("p", 5)
    assert tracker.to_commit(["p", "gone"]) == {"p": 7}
    tracker.committed({"p": 7})
    assert tracker.to_commit(["p"]) == {}
    assert tracker.in_flight() == 0


async def test_per_object_locks_are_forgotten_once_released() -> None:
    """The remediator keeps no lock for objects it is not working on (uids churn)."""
    kube = FakeKube(namespace_obj(labels={"kposture.io/mode": "observe"}))
    obj = kube.put(deployment("a", security={"privileged": True}))
    remediator, _ = _remediator(kube, dispatching.Slots(1))
    assert await remediator.handle(finding_for(obj), park=True) is Phase.SKIPPED
    assert len(remediator._locks) == 0


class _OneRoundTripAuditor(FakeAuditor):
    """An audit sink where every publish (one event or a batch) costs one broker round trip."""

    def __init__(self, round_trip_s: float) -> None:
        super().__init__()
        self.round_trip_s = round_trip_s
        self.publishes = 0

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        return (await self.record_many([event]))[0]

    async def record_many(self, events: Sequence[audit.AuditEvent]) -> list[audit.AuditEvent]:
        self.publishes += 1
        await asyncio.sleep(self.round_trip_s)
        return [await FakeAuditor.record(self, event) for event in events]


async def test_an_enforce_finding_behind_a_thousand_observe_findings_does_not_wait_for_them() -> (
    None
):
    """Observe findings are decided without a slot or an object read, audited in batches."""
    observed = 1000
    kube = FakeKube(namespace_obj("quiet"), namespace_obj(labels=ENFORCE))
    noisy = [
        kube.put(deployment(f"n{i}", namespace="quiet", security={"privileged": True}))
        for i in range(observed)
    ]
    fixme = kube.put(_status(deployment("fixme", security={"privileged": True}), healthy=True))
    reads: list[common.ObjectRef] = []
    real_get = kube.get

    async def counting_get(ref: common.ObjectRef) -> dict[str, Any] | None:
        reads.append(ref)
        return await real_get(ref)

    kube.get = counting_get  # type: ignore[method-assign]
    slots = dispatching.Slots(2)
    remediator, _ = _remediator(kube, slots)
    auditor = _OneRoundTripAuditor(round_trip_s=0.005)  # one by one: 1,000 x 5 ms = 5 s
    remediator.journal.auditor = auditing.AuditBatcher(auditor)
    messages = [Message(i, finding_for(obj)) for i, obj in enumerate(noisy)]
    enforced = finding_for(fixme)
    source = FakeSource({TP0: [*messages, Message(observed, enforced)]})
    loop = consuming.FindingsLoop(
        source,
        decide=lambda f: _decided(remediator, f),
        decode=lambda message: message.finding,
        wanted=lambda finding: True,
        dead_letter=_no_dead_letters,
        slots=slots,
        fast=remediator.decide_fast,
    )
    async with _running(loop):
        await _until(lambda: _phase(remediator, enforced) is Phase.VERIFIED)
        # Counted, not timed: behind one publish per observe finding (1,000 round trips)
        # the enforce finding would have waited for all of them.
        publishes_before_verified = auditor.publishes
        await _until(lambda: source.committed(TP0) == observed + 1)
    assert publishes_before_verified < 50
    assert auditor.publishes < 50  # batches, not one publish per finding
    skipped = [e for e in auditor.events if str(e.action) == "skipped"]
    assert len(skipped) == observed
    assert all("observe mode (from the default mode)" in e.rationale for e in skipped)
    # The quiet namespace is read once for all of them; none of their objects is read.
    assert [r for r in reads if r.namespace == "quiet"] == []
    assert sum(r.kind == "Namespace" and r.name == "quiet" for r in reads) == 1
    assert [kind for kind, _ in kube.writes] == ["apply"]
