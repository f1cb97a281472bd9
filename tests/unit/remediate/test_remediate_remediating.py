"""The remediation pipeline against fakes: modes, idempotency, conflicts, replans, pause."""

from __future__ import annotations

import asyncio

import msgspec
from remediate_fakes import (
    FakeAuditor,
    FakeClock,
    FakeKube,
    FakeLedger,
    deployment,
    finding_for,
    namespace,
)

from kposture.remediate import planning, remediating, throttling
from kposture.runtime import settings
from kposture.schemas import common, remediation

Phase = remediation.Phase
REF = planning.ref_of(deployment())


def _remediator(
    kube: FakeKube, clock: FakeClock, **config: object
) -> tuple[remediating.Remediator, FakeAuditor]:
    remediate = msgspec.convert(config, settings.RemediateSettings)
    throttle = throttling.Throttle(remediate)
    throttle.kill_switch.heartbeat(clock())
    auditor = FakeAuditor()
    remediator = remediating.Remediator(
        remediate,
        clusters={"c1": kube},
        ledger=FakeLedger(),
        auditor=auditor,
        throttle=throttle,
        canary_soak_s=0.0,
        clock=clock,
        sleep=clock.sleep,
    )
    return remediator, auditor


def _healthy(obj: dict[str, object]) -> dict[str, object]:
    obj = dict(obj)
    obj["status"] = {
        "observedGeneration": 99,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
    }
    return obj


async def test_enforce_mode_dry_runs_applies_verifies_and_audits() -> None:
    """A privileged Deployment in an enforce namespace is fixed, and every step is audited."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    remediator, auditor = _remediator(kube, FakeClock())
    phase = await remediator.handle(finding_for(obj))
    assert phase is Phase.VERIFIED
    assert auditor.actions() == ["planned", "dry-run", "applied", "verified"]
    assert [kind for kind, _ in kube.writes] == ["apply"]
    fixed = await kube.get(REF)
    assert fixed is not None
    assert fixed["spec"]["template"]["spec"]["containers"][0]["securityContext"] == {
        "privileged": False
    }


async def test_never_remediates_a_finding_that_could_not_be_evaluated() -> None:
    """A finding with result error is audited as skipped and nothing is read or written."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(deployment(security={"privileged": True}))
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj, result=common.Result.ERROR)) is Phase.SKIPPED
    assert kube.writes == []
    assert kube.dry_runs == 0
    assert auditor.actions() == ["skipped"]


async def test_observe_is_the_default_and_changes_nothing() -> None:
    """Without any mode configured the finding is skipped (audited) with its reason."""
    kube = FakeKube(namespace())
    obj = kube.put(deployment(security={"privileged": True}))
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.SKIPPED
    assert "observe" in auditor.events[0].rationale
    assert kube.writes == []


async def test_dry_run_mode_runs_the_server_side_dry_run_only() -> None:
    """dry-run mode: planned and dry-run audited, no write."""
    kube = FakeKube(namespace())
    obj = kube.put(deployment(security={"privileged": True}))
    remediator, auditor = _remediator(kube, FakeClock(), default_mode="dry-run")
    assert await remediator.handle(finding_for(obj)) is Phase.DRY_RUN
    assert kube.dry_runs == 1
    assert kube.writes == []
    assert auditor.actions() == ["planned", "dry-run"]


async def test_redelivery_is_an_audited_no_op_without_a_second_write() -> None:
    """The same finding twice: one write, and the second is audited as a no-op."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    remediator, auditor = _remediator(kube, FakeClock())
    finding = finding_for(obj)
    await remediator.handle(finding)
    assert await remediator.handle(finding) is Phase.NO_OP
    assert len(kube.writes) == 1
    assert auditor.actions()[-1] == "no-op"


async def test_a_crash_between_apply_and_audit_does_not_write_twice() -> None:
    """A ``planned`` record whose write landed: the retry sees the fix holds and only audits."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    remediator, auditor = _remediator(kube, FakeClock())
    finding = finding_for(obj)
    plan = planning.plan("privileged", obj, cluster="c1")
    assert plan is not None
    await kube.apply(plan.patch, dry_run=False)  # the write of the attempt that crashed
    key = remediation.decision_key(
        "c1", obj["metadata"]["uid"], "privileged", "v1.37", obj["metadata"]["resourceVersion"]
    )
    crashed = remediation.RemediationAction(
        action_id="a1",
        finding_key=finding.key,
        cluster="c1",
        ref=finding.ref,
        baseline=finding.baseline,
        baseline_version="v1.37",
        check="privileged",
        mode=finding.remediation.mode,
        risk=plan.risk,
        phase=Phase.PLANNED,
        patch=plan.patch,
        rationale="",
        decided_at=finding.detected_at,
        updated_at=finding.detected_at,
    )
    remediator.ledger.ledger.put(key, crashed)
    assert await remediator.handle(finding) is Phase.NO_OP
    assert len(kube.writes) == 1
    assert auditor.events[-1].action_id == "a1"
    assert "earlier attempt" in auditor.events[-1].rationale


async def test_a_field_owned_by_another_manager_is_escalated_not_forced() -> None:
    """A conflict on the dry run escalates; nothing is written."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(deployment(security={"privileged": True}))
    kube.owners["spec.template.spec.containers[name=app].securityContext.privileged"] = (
        "platform-team"
    )
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.ESCALATED
    assert kube.writes == []
    assert "platform-team" in auditor.events[-1].rationale


async def test_a_stale_plan_is_made_again_from_the_latest_object() -> None:
    """The object changes between plan and apply: the precondition fails and we replan."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    original_apply = kube.apply
    interfered = False

    async def apply_after_someone_else(
        patch: dict[str, object], *, dry_run: bool
    ) -> dict[str, object]:
        nonlocal interfered
        if not dry_run and not interfered:
            interfered = True
            current = await kube.get(REF)
            assert current is not None
            current["metadata"]["labels"]["touched"] = "yes"
            kube.put(current)  # another client writes first: our resourceVersion is stale now
        return await original_apply(patch, dry_run=dry_run)

    kube.apply = apply_after_someone_else  # type: ignore[method-assign]
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.VERIFIED
    assert len(kube.writes) == 1
    assert auditor.actions().count("planned") == 2
    final = await kube.get(REF)
    assert final is not None
    assert final["metadata"]["labels"]["touched"] == "yes"


async def test_gitops_objects_are_escalated_with_the_patch() -> None:
    """An Argo CD-tracked Deployment is escalated; the audit carries the suggested patch."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(
        deployment(security={"privileged": True}, labels={"argocd.argoproj.io/instance": "shop"})
    )
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.ESCALATED
    assert kube.writes == []
    assert auditor.events[-1].patch["kind"] == "Deployment"


async def test_needs_approval_waits_then_applies_once_approved() -> None:
    """A default-deny policy is created only after approval."""
    kube = FakeKube()
    ns = kube.put(namespace(labels={"kposture.io/mode": "enforce"}))
    remediator, auditor = _remediator(kube, FakeClock())
    finding = finding_for(ns, check="defaultDenyNetworkPolicy", baseline="cis-1.12", risk=None)
    assert await remediator.handle(finding) is Phase.PENDING_APPROVAL
    assert kube.writes == []
    pending = remediator.ledger.ledger.get(next(iter(remediator.ledger.ledger.decisions)))
    assert pending is not None
    approved = msgspec.structs.replace(pending, phase=Phase.APPROVED)
    assert await remediator.approve(approved, approver="alice") is Phase.VERIFIED
    assert [kind for kind, _ in kube.writes] == ["apply"]
    assert "approved" in auditor.actions()


async def test_a_pause_holds_writes_until_resumed() -> None:
    """Paused: the write waits (no write starts); resumed: it proceeds."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    clock = FakeClock()
    remediator, _ = _remediator(kube, clock)
    switch = remediator.throttle.kill_switch
    switch.observe(paused=True, reason="incident")
    real_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(seconds)
        switch.heartbeat(clock())
        if clock() > 1010:
            switch.observe(paused=False)
        await asyncio.sleep(0)

    remediator._sleep = sleep
    task = asyncio.create_task(remediator.handle(finding_for(obj)))
    assert await task is Phase.VERIFIED
    assert clock() > 1010  # the write started only after the resume
    assert len(kube.writes) == 1


async def test_a_failed_verification_is_rolled_back_automatically() -> None:
    """A controller that reverts our change: verification fails, the pre-image is restored."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_healthy(deployment(security={"privileged": True})))
    original_get = kube.get
    calls = 0

    async def get_reverted(ref: common.ObjectRef) -> dict[str, object] | None:
        nonlocal calls
        found = await original_get(ref)
        if ref.kind == "Deployment" and kube.writes and calls == 0:
            calls += 1
            assert found is not None
            found["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = (
                True
            )
        return found

    kube.get = get_reverted  # type: ignore[method-assign]
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.ROLLED_BACK
    assert auditor.actions()[-1] == "rolled-back"
    restored = await original_get(REF)
    assert restored is not None
    assert restored["spec"] == obj["spec"]


def _owned_by(obj: dict[str, object], manager: str, operation: str) -> dict[str, object]:
    obj["metadata"]["managedFields"] = [  # type: ignore[index]
        {
            "manager": manager,
            "operation": operation,
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"app"}': {"f:securityContext": {"f:privileged": {}}}
                            }
                        }
                    }
                }
            },
        }
    ]
    return obj


async def test_a_field_only_an_imperative_writer_owns_is_taken_over_with_a_guarded_patch() -> None:
    """Created with kubectl create: the conflict is resolved by a tested JSON Patch, not force."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(
        _owned_by(_healthy(deployment(security={"privileged": True})), "kubectl-create", "Update")
    )
    kube.owners["spec.template.spec.containers[name=app].securityContext.privileged"] = (
        "kubectl-create"
    )
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.VERIFIED
    [(kind, ops)] = kube.writes
    assert kind == "json-patch"
    assert {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": obj["metadata"]["resourceVersion"],
    } in ops
    assert "taken over from kubectl-create" in auditor.events[1].dry_run_result


async def test_a_field_declared_by_an_apply_manager_is_escalated() -> None:
    """Owned by an Apply manager: its source declares the value, so we escalate."""
    kube = FakeKube(namespace(labels={"kposture.io/mode": "enforce"}))
    obj = kube.put(_owned_by(deployment(security={"privileged": True}), "app-team", "Apply"))
    kube.owners["spec.template.spec.containers[name=app].securityContext.privileged"] = "app-team"
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.handle(finding_for(obj)) is Phase.ESCALATED
    assert kube.writes == []
    assert "declared by app-team (Apply)" in auditor.events[-1].rationale


async def test_namespace_labels_are_cached_briefly_and_observe_needs_no_object_read() -> None:
    """One namespace read per TTL; a label change (observe -> enforce) applies after it."""
    kube = FakeKube(namespace())
    a = kube.put(deployment("a", security={"privileged": True}))
    b = kube.put(_healthy(deployment("b", security={"privileged": True})))
    reads: list[common.ObjectRef] = []
    real_get = kube.get

    async def counting_get(ref: common.ObjectRef) -> object:
        reads.append(ref)
        return await real_get(ref)

    kube.get = counting_get  # type: ignore[method-assign]
    clock = FakeClock()
    remediator, auditor = _remediator(kube, clock)
    assert await remediator.decide_fast(finding_for(a))
    assert await remediator.decide_fast(finding_for(b))
    assert [r.kind for r in reads] == ["Namespace"]
    assert auditor.actions() == ["skipped", "skipped"]
    kube.put(namespace(labels={"kposture.io/mode": "enforce"}))
    assert await remediator.decide_fast(finding_for(a, check="allowPrivilegeEscalation"))
    clock.now += remediating.NAMESPACE_TTL_S
    remediator.throttle.kill_switch.heartbeat(clock())  # the ledger reader kept up meanwhile
    b = kube.put(_healthy(deployment("b", security={"privileged": True})))  # changed since
    assert not await remediator.decide_fast(finding_for(b))  # enforce: the full path
    assert await remediator.handle(finding_for(b)) is Phase.VERIFIED
    assert [r.kind for r in reads].count("Namespace") == 2


async def test_observe_via_the_fast_path_still_turns_a_redelivery_into_a_no_op() -> None:
    """The ledger is checked and written on the fast path too."""
    kube = FakeKube(namespace(labels={"kposture.io/remediation": "off"}))
    obj = kube.put(deployment(security={"privileged": True}))
    remediator, auditor = _remediator(kube, FakeClock())
    assert await remediator.decide_fast(finding_for(obj))
    assert await remediator.decide_fast(finding_for(obj))
    assert auditor.actions() == ["skipped", "no-op"]
    assert "opted out" in auditor.events[0].rationale
