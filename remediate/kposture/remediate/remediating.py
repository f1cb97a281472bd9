"""Remediating: one finding, from policy to a verified (or rolled back) fix, every step audited.

The steps, each recorded in the ledger and the audit chain: screen the finding, look for an
earlier decision (redelivery -> no-op), read the object and its namespace, resolve the mode,
follow owners to the template to fix, plan, judge (GitOps and automation accounts escalate),
record ``planned``, server-side dry run, then -- in enforce mode -- wait for approval, a canary
or the throttle, apply, verify, and roll back if the fix did not hold or health regressed.
A stale plan (the object changed) is planned again from the latest state.

Observe mode is the common case under churn, and its decision needs no object: when the mode
resolves to observe from the config and the namespace's labels (cached per cluster for
``namespace_ttl_s``, read once per namespace however many findings ask),
:meth:`Remediator.decide_fast` records and audits the ``skipped`` decision without a
concurrency slot or an object read, and its audit event joins a batch
(:class:`auditing.AuditBatcher`).

With ``park=True`` (the service) a finding that would wait for a backoff, a running canary
or a resume raises :class:`errors.WouldWaitError` instead -- before anything is recorded when
that is known in advance -- and is decided again later, never holding a worker meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from kposture.remediate import (
    admitting,
    applying,
    auditing,
    canarying,
    dispatching,
    errors,
    fixes,
    journaling,
    planning,
    policy,
    recording,
    throttling,
    verifying,
)
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, common, findings, remediation

log = logging.getLogger(__name__)

Phase = remediation.Phase
Act, Out = audit.Action, audit.Outcome
_REPLANS = 5
_REPLAN_PAUSE_S = 0.2  # doubled per attempt: a rollout's status churn settles in seconds
NAMESPACE_TTL_S = 5.0
"""How long a namespace's labels (its mode and opt-out) are trusted without reading it again."""
_NAMESPACE_CACHE_MAX = 4096  # expired entries are dropped beyond this many


class Remediator:
    """Acts on findings for a set of clusters; all its side effects go through its ports."""

    def __init__(
        self,
        settings: settings_mod.RemediateSettings,
        *,
        clusters: Mapping[str, applying.Kube],
        ledger: journaling.LedgerPort,
        auditor: auditing.AuditSink,
        throttle: throttling.Throttle,
        canary_timeout_s: float = 300.0,
        canary_soak_s: float = 5.0,
        take_over_imperative: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lend_slot: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext,
        namespace_ttl_s: float = NAMESPACE_TTL_S,
    ) -> None:
        self.settings = settings
        self.clusters = clusters
        self.ledger = ledger
        # Events recorded meanwhile are published together: skips never queue one by one.
        self.journal = journaling.Journal(ledger=ledger, auditor=auditing.AuditBatcher(auditor))
        self.throttle = throttle
        self.canary_timeout_s = canary_timeout_s
        self.canary_soak_s = canary_soak_s
        # Fields only imperative writers own are fixed with a guarded JSON Patch (see
        # policy.takeover_refusal); False escalates every server-side apply conflict.
        self.take_over_imperative = take_over_imperative
        self._clock = clock
        self._sleep = sleep
        # The service's global concurrency slot is given back while a rollout is awaited.
        self._lend_slot = lend_slot
        # Findings and approvals of one object never interleave (the ledger check and the
        # write must be one step); the service also orders them, approvals it does not.
        self._locks = dispatching.KeyedLocks()
        self.canaries = canarying.CanaryGate()
        self.namespace_ttl_s = namespace_ttl_s
        # (cluster, namespace) -> (expiry on our clock, labels); reads in flight are shared.
        self._namespaces: dict[tuple[str, str], tuple[float, Mapping[str, str]]] = {}
        self._namespace_reads: dict[tuple[str, str], asyncio.Task[Mapping[str, str]]] = {}

    async def decide_fast(self, finding: findings.Finding) -> bool:
        """Decide ``finding`` without a slot or an object read when that is possible.

        Screened findings and findings whose mode resolves to observe (config plus the cached
        namespace labels) are decided and audited here: True. Anything else -- another mode,
        a decision to continue, an unknown cluster -- is left to :meth:`handle`: False.
        The ``skipped`` decision is the one :meth:`handle` makes; only its reason may differ
        when the object itself opted out or is gone (it is not read).
        """
        screened = policy.screen(finding)
        step = journaling.Step.of_finding(finding)
        if screened is not None:
            if screened.verdict is not policy.Verdict.IGNORE:
                await self.journal.skip(step, screened.reason)
            return True
        kube = self.clusters.get(finding.cluster)
        if kube is None:
            return False
        namespace = _namespace_of(finding.ref)
        try:
            labels = await self._labels_of(finding.cluster, kube, namespace) if namespace else {}
        except Exception as exc:  # noqa: BLE001 - the full path reads (and reports) it again
            log.debug("namespace %s of %s not read: %s", namespace, finding.key, exc)
            return False
        mode, source = policy.resolve_mode(finding, namespace_labels=labels, settings=self.settings)
        if mode is not findings.RemediationMode.OBSERVE:
            return False
        async with self._locks.hold(f"{finding.cluster}/{finding.ref.uid}"):
            earlier = self.ledger.ledger.get(_decision_key(finding))
            if earlier is not None:
                if not _decided(earlier):
                    return False  # a crashed attempt: the full path continues it
                await self._no_op(step, earlier)
                return True
            step.mode = mode
            if policy.opted_out({}, labels):
                await self.journal.skip(step, f"opted out with {policy.OPT_OUT_LABEL}: off")
            else:
                await self.journal.skip(step, f"observe mode (from the {source})")
        return True

    async def handle(self, finding: findings.Finding, *, park: bool = False) -> Phase | None:
        """Act on one finding; the final phase, or None when it is not a decision at all.

        ``park``: raise :class:`errors.WouldWaitError` instead of waiting for a backoff, a running
        canary or a resume (the caller decides the finding again later).
        """
        screened = policy.screen(finding)
        step = journaling.Step.of_finding(finding)
        if screened is not None:
            if screened.verdict is policy.Verdict.IGNORE:
                return None
            return await self.journal.skip(step, screened.reason)
        key = _decision_key(finding)
        async with self._locks.hold(f"{finding.cluster}/{finding.ref.uid}"):
            earlier = self.ledger.ledger.get(key)
            if earlier is not None and _decided(earlier):
                return await self._no_op(step, earlier)
            step.action = earlier  # a crashed attempt continues under the same action id
            return await self._remediate(step, finding, resumed=earlier is not None, park=park)

    async def _no_op(self, step: journaling.Step, earlier: remediation.RemediationAction) -> Phase:
        step.action = earlier
        why = f"redelivery: already decided ({earlier.phase}, action {earlier.action_id})"
        await self.journal.event(step, Act.NO_OP, Out.NONE, why)
        return Phase.NO_OP

    async def _remediate(
        self, step: journaling.Step, f: findings.Finding, *, resumed: bool, park: bool
    ) -> Phase:
        kube = self.clusters.get(f.cluster)
        if kube is None:
            return await self.journal.skip(step, f"cluster {f.cluster!r} is not configured here")
        for attempt in range(_REPLANS):
            obj = await kube.get(f.ref)
            if obj is None or (obj.get("metadata") or {}).get("uid") != f.ref.uid:
                return await self.journal.skip(step, f"{f.ref.subject} is gone or was replaced")
            ns_labels = await self._namespace_labels(f.cluster, kube, obj)
            mode, source = policy.resolve_mode(
                f, namespace_labels=ns_labels, settings=self.settings
            )
            step.mode = mode
            if policy.opted_out(obj, ns_labels):
                return await self.journal.skip(step, f"opted out with {policy.OPT_OUT_LABEL}: off")
            if mode is findings.RemediationMode.OBSERVE:
                return await self.journal.skip(step, f"observe mode (from the {source})")
            try:
                target = step.target = await self._target(kube, obj, f.check)
                step.plan = planning.plan(
                    f.check, target, cluster=f.cluster, finding_risk=f.remediation.risk
                )
            except errors.NoFixError as exc:
                return await self.journal.skip(step, str(exc))
            except errors.UnsafeTargetError as exc:
                return await self.journal.escalate(step, str(exc))
            if step.plan is None:
                why = "the fix already holds" + (
                    " (an earlier attempt applied it)" if resumed else ""
                )
                await self.journal.record(step, Phase.VERIFIED if resumed else Phase.NO_OP, why)
                await self.journal.event(step, Act.NO_OP, Out.NONE, why)
                return Phase.NO_OP
            if policy.opted_out(target, ns_labels):  # the owner we fix may opt out itself
                return await self.journal.skip(step, f"opted out with {policy.OPT_OUT_LABEL}: off")
            judged = policy.judge(step.plan, obj=target, mode=mode, settings=self.settings)
            if judged.verdict is policy.Verdict.ESCALATE:
                return await self.journal.escalate(step, judged.reason)
            writes = (
                judged.mode is findings.RemediationMode.ENFORCE
                and (judged.risk or step.plan.risk) is not findings.Risk.NEEDS_APPROVAL
            )
            if park and writes:
                self._park_if_waiting(f.cluster, step.plan)  # before anything is recorded
            try:
                return await self._act(step, kube, judged, park=park)
            except errors.StaleObjectError as exc:
                log.info("replanning %s: %s", f.key, exc)
                await self._sleep(_REPLAN_PAUSE_S * 2**attempt)
        return await self.journal.conclude(
            step,
            Phase.FAILED,
            Act.FAILED,
            Out.FAILURE,
            f"the object kept changing; gave up after {_REPLANS} plans",
        )

    async def _namespace_labels(
        self, cluster: str, kube: applying.Kube, obj: Mapping[str, Any]
    ) -> Mapping[str, str]:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Namespace":
            labels: Mapping[str, str] = meta.get("labels") or {}
            self._remember(cluster, str(meta.get("name") or ""), labels)
            return labels
        if not meta.get("namespace"):
            return {}
        return await self._labels_of(cluster, kube, meta["namespace"])

    async def _labels_of(
        self, cluster: str, kube: applying.Kube, namespace: str
    ) -> Mapping[str, str]:
        """The labels of ``namespace``: cached for ``namespace_ttl_s``, one read at a time."""
        key = (cluster, namespace)
        cached = self._namespaces.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        reading = self._namespace_reads.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read_labels(cluster, kube, namespace))
            self._namespace_reads[key] = reading
            reading.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(reading)

    def _read_done(self, key: tuple[str, str], task: asyncio.Future[Mapping[str, str]]) -> None:
        if self._namespace_reads.get(key) is task:
            del self._namespace_reads[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it already

    async def _read_labels(
        self, cluster: str, kube: applying.Kube, namespace: str
    ) -> Mapping[str, str]:
        ns = await kube.get(common.ObjectRef("v1", "Namespace", namespace, ""))
        labels: Mapping[str, str] = ((ns or {}).get("metadata") or {}).get("labels") or {}
        self._remember(cluster, namespace, labels)
        return labels

    def _remember(self, cluster: str, namespace: str, labels: Mapping[str, str]) -> None:
        now = self._clock()
        if len(self._namespaces) >= _NAMESPACE_CACHE_MAX:
            self._namespaces = {k: v for k, v in self._namespaces.items() if v[0] > now}
        self._namespaces[(cluster, namespace)] = (now + self.namespace_ttl_s, dict(labels))

    async def _target(self, kube: applying.Kube, obj: dict[str, Any], check: str) -> Any:
        fix = fixes.lookup(check)
        assert fix is not None  # screen() let only checks with a fix through
        target = obj
        for _ in range(3):  # Pod -> ReplicaSet -> Deployment at most
            owner = planning.owner_to_fix(fix, target)
            if owner is None:
                return target
            found = await kube.get(owner)
            if found is None:
                raise errors.UnsafeTargetError(f"owner {owner.kind} {owner.subject} is gone")
            target = found
        return target

    async def _act(
        self, step: journaling.Step, kube: applying.Kube, judged: policy.Decision, *, park: bool
    ) -> Phase:
        plan = step.plan
        assert plan is not None
        plan = step.plan = dataclasses.replace(plan, risk=judged.risk or plan.risk)
        await self.journal.record(step, Phase.PLANNED, judged.reason)
        await self.journal.event(step, Act.PLANNED, Out.NONE, judged.reason)
        try:
            step.dry_run, holds = await self._dry_run(step, kube)
        except errors.FieldConflictError as exc:
            return await self.journal.escalate(step, str(exc))
        except errors.StaleObjectError:
            raise
        except errors.ApplyError as exc:
            step.dry_run = f"refused: {exc}"
            return await self.journal.conclude(
                step, Phase.FAILED, Act.DRY_RUN, Out.FAILURE, str(exc)
            )
        plan = step.plan
        if not holds:
            return await self.journal.conclude(
                step,
                Phase.ESCALATED,
                Act.DRY_RUN,
                Out.FAILURE,
                "the fix would not hold (a webhook or default undoes it)",
            )
        if judged.mode is findings.RemediationMode.DRY_RUN:
            return await self.journal.conclude(
                step, Phase.DRY_RUN, Act.DRY_RUN, Out.SUCCESS, "dry-run mode: nothing changed"
            )
        if plan.risk is findings.Risk.NEEDS_APPROVAL:
            assert step.action is not None  # recorded as planned above
            why = f"needs approval: kposture remediation approve {step.action.action_id}"
            await self.journal.record(step, Phase.PENDING_APPROVAL, why)
            await self.journal.event(step, Act.DRY_RUN, Out.SUCCESS, why)
            return Phase.PENDING_APPROVAL
        await self.journal.event(step, Act.DRY_RUN, Out.SUCCESS, "server-side dry run accepted")
        return await self._enforce(step, kube, park=park)

    async def approve(self, action: remediation.RemediationAction, *, approver: str) -> Phase:
        """Carry out an approved action (called when its ``approved`` record is read)."""
        step = journaling.Step.of_action(action)
        kube = self.clusters[action.cluster]
        async with self._locks.hold(f"{action.cluster}/{action.ref.uid}"):
            await self.journal.event(
                step, Act.APPROVED, Out.NONE, f"approved by {approver}", actor=approver
            )
            obj = await kube.get(action.ref)
            if obj is None:
                return await self.journal.conclude(
                    step,
                    Phase.FAILED,
                    Act.FAILED,
                    Out.FAILURE,
                    "the object is gone since it was planned",
                )
            target = step.target = await self._target(kube, obj, action.check)
            step.plan = planning.plan(
                action.check, target, cluster=action.cluster, finding_risk=action.risk
            )
            if step.plan is None:
                return await self.journal.conclude(
                    step, Phase.NO_OP, Act.NO_OP, Out.NONE, "the fix already holds"
                )
            if _changes(step.plan.patch) != _changes(action.patch):
                return await self.journal.escalate(
                    step, "the object changed since approval; plan again"
                )
            return await self._enforce(step, kube)

    async def _enforce(
        self, step: journaling.Step, kube: applying.Kube, *, park: bool = False
    ) -> Phase:
        plan = step.plan
        assert plan is not None
        if park:
            # Checked again: a canary may have started during our dry run. Parking here means
            # planning again later (the ledger keeps the action id), which is rare.
            self._park_if_waiting(step.cluster, plan)
        canary = await self.canaries.role(plan.canary_group)
        if canary is False:
            return await self.journal.escalate(
                step, f"the canary of {plan.canary_group} failed; not applied"
            )
        try:
            await self._admitted(step.cluster, plan, park=park)
            await self._write(kube, step, dry_run=False)
        except errors.WouldWaitError:
            self.canaries.settle(plan.canary_group, canary, ok=None)  # another one may go first
            raise
        except errors.FieldConflictError as exc:
            self.canaries.settle(plan.canary_group, canary, ok=False)
            return await self.journal.escalate(step, f"not forced: {exc}")
        except errors.StaleObjectError:
            self.canaries.settle(plan.canary_group, canary, ok=None)
            raise
        except errors.ApplyError as exc:
            self.throttle.failed(step.cluster, plan.target.uid, self._clock())
            self.canaries.settle(plan.canary_group, canary, ok=False)
            return await self.journal.conclude(
                step, Phase.FAILED, Act.APPLIED, Out.FAILURE, str(exc)
            )
        self.throttle.wrote(step.cluster, plan.target.uid, self._clock())
        await self.journal.record(step, Phase.APPLIED, plan.rationale)
        await self.journal.event(step, Act.APPLIED, Out.SUCCESS, plan.rationale)
        try:
            message = await self._verify(kube, plan)
        except errors.RemediationError as exc:
            self.throttle.failed(step.cluster, plan.target.uid, self._clock())
            self.canaries.settle(plan.canary_group, canary, ok=False)
            return await self._roll_back(step, kube, f"verification failed: {exc}")
        self.canaries.settle(plan.canary_group, canary, ok=True)
        return await self.journal.conclude(step, Phase.VERIFIED, Act.VERIFIED, Out.SUCCESS, message)

    async def _dry_run(self, step: journaling.Step, kube: applying.Kube) -> tuple[str, bool]:
        """Dry-run the plan; on a conflict, switch to a takeover if policy allows one."""
        plan = step.plan
        assert plan is not None
        try:
            return await self._write(kube, step, dry_run=True)
        except errors.FieldConflictError as exc:
            refusal = policy.takeover_refusal(step.target, plan.changed)
            if not self.take_over_imperative or refusal is not None:
                raise errors.FieldConflictError(
                    f"{refusal or 'not forced'} ({exc})", managers=exc.managers, fields=exc.fields
                ) from exc
            step.plan = dataclasses.replace(plan, operation=planning.Operation.TAKE_OVER)
            summary, holds = await self._write(kube, step, dry_run=True)
            owners = ", ".join(exc.managers) or "imperative writers"
            return f"{summary} (taken over from {owners}, which only wrote it imperatively)", holds

    async def _write(
        self, kube: applying.Kube, step: journaling.Step, *, dry_run: bool
    ) -> tuple[str, bool]:
        """Write (or dry-run) the plan; a summary, and whether the fix holds on the result."""
        plan = step.plan
        assert plan is not None
        if plan.operation is planning.Operation.DELETE:
            await kube.delete(plan.target, dry_run=dry_run)
            return ("accepted: the Pod would be deleted" if dry_run else "deleted"), True
        if plan.operation is planning.Operation.TAKE_OVER:
            ops = planning.takeover_ops(plan, step.target)
            result = await kube.json_patch(plan.target, ops, dry_run=dry_run)
        else:
            result = await kube.apply(plan.patch, dry_run=dry_run)
        holds = not plan.target.uid or verifying.fix_holds(plan.check, result)
        return applying.summarize_dry_run(plan, result), holds

    def _park_if_waiting(self, cluster: str, plan: planning.Plan) -> None:
        admitting.park_if_waiting(
            cluster,
            plan,
            throttle=self.throttle,
            canaries=self.canaries,
            now=self._clock,
            canary_wait_s=self.canary_timeout_s + self.canary_soak_s,
        )

    async def _admitted(self, cluster: str, plan: planning.Plan, *, park: bool) -> None:
        await admitting.admitted(
            cluster,
            plan,
            throttle=self.throttle,
            park=park,
            now=self._clock,
            sleep=self._sleep,  # read per call: tests replace it on a built remediator
        )

    async def _verify(self, kube: applying.Kube, plan: planning.Plan) -> str:
        if plan.operation is planning.Operation.DELETE:
            return "deleted" if await kube.get(plan.target) is None else "deletion pending"
        await applying.verify(kube, plan)
        if plan.risk is not findings.Risk.DISRUPTIVE:
            return "verified: the fix holds on the re-read object"
        async with self._lend_slot():  # a rollout and its soak cost the apiserver little
            health = await applying.wait_healthy(
                kube,
                plan.target,
                timeout_s=self.canary_timeout_s,
                soak_s=self.canary_soak_s,
                clock=self._clock,
                sleep=self._sleep,
            )
        return f"verified: the fix holds and the rollout is healthy ({health})"

    async def _roll_back(self, step: journaling.Step, kube: applying.Kube, why: str) -> Phase:
        plan = step.plan
        assert plan is not None
        try:
            await applying.rollback(kube, plan.target, pre_image=plan.pre_image, patch=plan.patch)
        except errors.RemediationError as exc:
            return await self.journal.conclude(
                step, Phase.FAILED, Act.ROLLED_BACK, Out.FAILURE, f"{why}; rollback failed: {exc}"
            )
        return await self.journal.conclude(
            step, Phase.ROLLED_BACK, Act.ROLLED_BACK, Out.SUCCESS, why
        )


def _decision_key(finding: findings.Finding) -> str:
    return remediation.decision_key(
        finding.cluster,
        finding.ref.uid,
        finding.check,
        finding.baseline_version,
        finding.ref.resource_version,
    )


def _decided(earlier: remediation.RemediationAction) -> bool:
    """Whether a recorded action settles a redelivered finding (a no-op)."""
    return earlier.phase in recording.TERMINAL or earlier.phase is Phase.PENDING_APPROVAL


def _namespace_of(ref: common.ObjectRef) -> str:
    """The namespace whose labels apply to ``ref`` ("" for a cluster-scoped object)."""
    return ref.name if ref.kind == "Namespace" else ref.namespace


def _changes(patch: Mapping[str, Any]) -> Any:
    """A patch without its preconditions, to compare an approved plan with a fresh one."""
    meta = {k: v for k, v in (patch.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**patch, "metadata": meta}
