"""Remediation against a real apiserver and broker: fix, conflict, replan, redelivery, rollback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
from kubernetes_asyncio import client
from remediate_it_support import (
    Stack,
    audit_records,
    create,
    create_imperatively,
    deployment,
    finding_for,
    stack,
)

from kposture.cli import remediate_cmd
from kposture.remediate import applying, auditing, planning
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, findings, remediation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Phase = remediation.Phase
PRIVILEGED = {"privileged": True}


def _container_security(obj: dict[str, Any]) -> Any:
    return obj["spec"]["template"]["spec"]["containers"][0].get("securityContext")


def _managers(obj: dict[str, Any]) -> set[str]:
    return {entry["manager"] for entry in obj["metadata"].get("managedFields") or ()}


async def test_a_privileged_deployment_is_dry_run_then_fixed_by_kposture(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """Created by kubectl create: dry run, write as kposture, verify, healthy rollout, audit."""
    obj = await create_imperatively(api, deployment("web", namespace, security=PRIVILEGED))
    phase = await remediator.remediator.handle(finding_for(obj, cluster=remediator.cluster))
    assert phase is Phase.VERIFIED
    fixed = await remediator.kube.get(planning.ref_of(obj))
    assert fixed is not None
    assert _container_security(fixed)["privileged"] is False
    assert "kposture" in _managers(fixed)
    events = [r.event for r in await audit_records(remediator.settings) if r.event]
    # What *this* remediator wrote, from its own audit chain. The live object alone cannot
    # tell: other kposture pipelines on the shared cluster (a demo or bench remediator) act on
    # every namespace labelled enforce, this one included, and fix its other checks (e.g.
    # allowPrivilegeEscalation) under the same field manager name.
    [applied] = [e for e in events if e.action is audit.Action.APPLIED]
    assert applied.patch is not None
    assert _container_security(applied.patch) == {"privileged": False}
    actions = [e.action for e in events]
    assert actions[-4:] == [
        audit.Action.PLANNED,
        audit.Action.DRY_RUN,
        audit.Action.APPLIED,
        audit.Action.VERIFIED,
    ]
    # Status updates of the rollout may make a plan stale before its write: it is made again.
    assert set(actions[:-4]) <= {audit.Action.PLANNED, audit.Action.DRY_RUN}


async def test_a_field_owned_by_another_manager_is_escalated_not_forced(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """The dry run meets a FieldManagerConflict: escalated, and the object is unchanged."""
    obj = await create(api, deployment("owned", namespace, security=PRIVILEGED), manager="app-team")
    phase = await remediator.remediator.handle(finding_for(obj, cluster=remediator.cluster))
    assert phase is Phase.ESCALATED
    after = await remediator.kube.get(planning.ref_of(obj))
    assert after is not None
    assert _container_security(after) == PRIVILEGED
    assert "kposture" not in _managers(after)
    last = [r.event for r in await audit_records(remediator.settings) if r.event][-1]
    assert last.action is audit.Action.ESCALATED
    assert "app-team" in last.rationale


async def test_a_stale_resource_version_is_planned_again(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """Another client writes between our plan and our apply: the precondition fails, we replan."""
    obj = await create(api, deployment("busy", namespace, security={}), manager="app-team")
    kube = remediator.kube
    real_apply = kube.apply
    interfered = asyncio.Event()

    async def apply_after_a_concurrent_write(patch: Any, *, dry_run: bool) -> dict[str, Any]:
        if not dry_run and not interfered.is_set():
            interfered.set()
            await applying.KubeClient(api, field_manager="it-other").json_patch(
                planning.ref_of(obj),
                [{"op": "add", "path": "/metadata/labels/touched", "value": "yes"}],
            )
        return await real_apply(patch, dry_run=dry_run)

    kube.apply = apply_after_a_concurrent_write  # type: ignore[method-assign]
    finding = finding_for(obj, cluster=remediator.cluster, check="allowPrivilegeEscalation")
    phase = await remediator.remediator.handle(finding)
    events = [r.event for r in await audit_records(remediator.settings) if r.event]
    assert phase is Phase.VERIFIED, [(e.action, e.rationale, e.dry_run_result) for e in events]
    assert interfered.is_set()
    final = await remediator.kube.get(planning.ref_of(obj))
    assert final is not None
    assert final["metadata"]["labels"]["touched"] == "yes"
    # Other pipelines on the shared cluster may fix other fields of this object meanwhile.
    assert _container_security(final)["allowPrivilegeEscalation"] is False
    actions = [r.event.action for r in await audit_records(remediator.settings) if r.event]
    assert actions.count(audit.Action.PLANNED) >= 2


async def test_redelivery_writes_nothing_and_is_audited_as_a_no_op(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """The same finding again: resourceVersion and managedFields stay as they were."""
    obj = await create_imperatively(api, deployment("again", namespace, security=PRIVILEGED))
    finding = finding_for(obj, cluster=remediator.cluster)
    assert await remediator.remediator.handle(finding) is Phase.VERIFIED
    before = await remediator.kube.get(planning.ref_of(obj))
    assert await remediator.remediator.handle(finding) is Phase.NO_OP
    after = await remediator.kube.get(planning.ref_of(obj))
    assert before is not None
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    kposture_fields = [m for m in after["metadata"]["managedFields"] if m["manager"] == "kposture"]
    assert kposture_fields == [
        m for m in before["metadata"]["managedFields"] if m["manager"] == "kposture"
    ]
    last = [r.event for r in await audit_records(remediator.settings) if r.event][-1]
    assert last.action is audit.Action.NO_OP


async def test_rollback_restores_the_pre_image_and_is_audited(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """`kposture remediation rollback AUDIT_ID` puts privileged back, exactly; the chain holds."""
    obj = await create_imperatively(api, deployment("undo", namespace, security=PRIVILEGED))
    original = obj["spec"]["template"]["spec"]
    assert await remediator.remediator.handle(finding_for(obj, cluster=remediator.cluster)) is (
        Phase.VERIFIED
    )
    records = await audit_records(remediator.settings)
    applied = next(r.event for r in records if r.event and r.event.action is audit.Action.APPLIED)
    message = await remediate_cmd.rollback_action(remediator.settings, applied.audit_id, actor="it")
    assert "rolled back" in message
    restored = await remediator.kube.get(planning.ref_of(obj))
    assert restored is not None
    assert restored["spec"]["template"]["spec"] == original
    records = await audit_records(remediator.settings)
    assert records[-1].event is not None
    assert records[-1].event.action is audit.Action.ROLLED_BACK
    assert auditing.verify(records) is None


def _service_account(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
    }


def _token_finding(obj: dict[str, Any], cluster: str) -> Any:
    finding = finding_for(obj, cluster=cluster, check="automountServiceAccountToken")
    return msgspec.structs.replace(
        finding, remediation=findings.Remediation(available=True, risk=findings.Risk.SAFE)
    )


async def test_safe_fix_latency_from_finding_to_verified_fix(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """A safe fix (no automounted token) on 30 ServiceAccounts; prints p50/p99 latency."""
    latencies = []
    for n in range(30):
        obj = await create(api, _service_account(f"sa-{n}", namespace), manager="app-team")
        started = time.perf_counter()
        phase = await remediator.remediator.handle(_token_finding(obj, remediator.cluster))
        latencies.append(time.perf_counter() - started)
        assert phase is Phase.VERIFIED
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"safe fix latency over {len(latencies)}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert p99 < 5.0


async def test_the_rate_limit_holds_at_the_apiserver(
    api: client.ApiClient, namespace: str, settings: settings_mod.Settings
) -> None:
    """2 writes per second with a burst of 2: eight fixes take at least three seconds."""
    limited = msgspec.structs.replace(
        settings,
        remediate=msgspec.structs.replace(settings.remediate, patches_per_second=2.0, burst=2),
    )
    async with stack(limited) as remediator:
        objs = [
            await create(api, _service_account(f"rl-{n}", namespace), manager="app-team")
            for n in range(8)
        ]
        started = time.monotonic()
        phases = await asyncio.gather(
            *(remediator.remediator.handle(_token_finding(o, remediator.cluster)) for o in objs)
        )
        elapsed = time.monotonic() - started
        assert set(phases) == {Phase.VERIFIED}
        assert elapsed >= 2.9, f"8 writes at 2/s with burst 2 took only {elapsed:.1f}s"
        # The apiserver holds exactly one kposture write per object, no more.
        for obj in objs:
            live = await remediator.kube.get(planning.ref_of(obj))
            assert live is not None
            managers = [m["manager"] for m in live["metadata"]["managedFields"]]
            assert managers.count("kposture") == 1


async def test_the_breaker_opens_when_a_baseline_flags_everything(
    api: client.ApiClient, namespace: str, remediator: Stack
) -> None:
    """With 10 objects and a 20 % touch limit, writes stop at the limit and the breaker opens."""
    breaker = remediator.remediator.throttle.breaker
    breaker.population(remediator.cluster, 10)
    objs = [
        await create(api, _service_account(f"all-{n}", namespace), manager="app-team")
        for n in range(10)
    ]
    tasks = [
        asyncio.create_task(remediator.remediator.handle(_token_finding(o, remediator.cluster)))
        for o in objs
    ]
    for _ in range(300):
        if (
            breaker.open_reason is not None
            and sum(t.done() for t in tasks) >= breaker.min_touches - 1
        ):
            break
        await asyncio.sleep(0.1)
    assert breaker.open_reason is not None
    done = [t for t in tasks if t.done()]
    assert len(done) == breaker.min_touches - 1  # the write that would cross the limit never ran
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    fixed = 0
    for obj in objs:
        live = await remediator.kube.get(planning.ref_of(obj))
        assert live is not None
        fixed += live.get("automountServiceAccountToken") is False
    assert fixed == breaker.min_touches - 1
