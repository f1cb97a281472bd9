"""Journaling: each remediation step's record in the ledger and its event in the audit chain.

A :class:`Step` is the running state of one remediation (what it is about, its action, its
latest plan); a :class:`Journal` writes the step's decision to the idempotency ledger and seals
an audit event for it, so the pipeline in ``remediating`` reads as a list of decisions.
"""

from __future__ import annotations

from typing import Any, Protocol

from kposture.remediate import auditing, planning, recording
from kposture.schemas import audit, common, findings, remediation

Phase = remediation.Phase
Act, Out = audit.Action, audit.Outcome


class LedgerPort(Protocol):
    """The part of :class:`recording.KafkaLedger` remediation uses."""

    ledger: recording.Ledger

    async def record(self, action: remediation.RemediationAction) -> None: ...


class Step:
    """The running state of one remediation: what it is about, its action and latest plan."""

    def __init__(
        self,
        *,
        finding_key: str,
        cluster: str,
        ref: common.ObjectRef,
        check: str,
        baseline: str,
        baseline_version: str,
    ) -> None:
        self.finding_key = finding_key
        self.cluster = cluster
        self.ref = ref  # the finding's ref: it keeps the decision key stable across phases
        self.check = check
        self.baseline = baseline
        self.baseline_version = baseline_version
        self.started_at = common.utcnow()
        self.mode = findings.RemediationMode.OBSERVE
        self.action: remediation.RemediationAction | None = None
        self.plan: planning.Plan | None = None
        self.target: dict[str, Any] = {}  # the live object the plan writes, as last read
        self.dry_run = ""

    @classmethod
    def of_finding(cls, f: findings.Finding) -> Step:
        """The step for a finding just read."""
        return cls(
            finding_key=f.key,
            cluster=f.cluster,
            ref=f.ref,
            check=f.check,
            baseline=f.baseline,
            baseline_version=f.baseline_version,
        )

    @classmethod
    def of_action(cls, a: remediation.RemediationAction) -> Step:
        """The step for an action read back from the ledger (an approval)."""
        step = cls(
            finding_key=a.finding_key,
            cluster=a.cluster,
            ref=a.ref,
            check=a.check,
            baseline=a.baseline,
            baseline_version=a.baseline_version,
        )
        step.action, step.mode = a, a.mode
        return step


class Journal:
    """Writes decisions to the ledger and the audit chain."""

    def __init__(self, *, ledger: LedgerPort, auditor: auditing.AuditSink) -> None:
        self.ledger = ledger
        self.auditor = auditor

    async def event(
        self,
        step: Step,
        action: audit.Action,
        outcome: audit.Outcome,
        why: str,
        *,
        actor: str = auditing.ACTOR,
    ) -> audit.AuditEvent:
        """Seal and publish an audit event for the step (the ledger is left as it is)."""
        plan = step.plan
        return await self.auditor.record(
            auditing.new_event(
                action,
                outcome,
                rationale=why,
                cluster=step.cluster,
                ref=plan.target if plan is not None else step.ref,
                finding_key=step.finding_key,
                check=step.check,
                action_id=step.action.action_id if step.action is not None else "",
                started_at=step.started_at,
                pre_image=plan.pre_image if plan is not None else None,
                patch=plan.patch if plan is not None else None,
                dry_run_result=step.dry_run,
                actor=actor,
            )
        )

    async def record(self, step: Step, phase: Phase, why: str) -> None:
        """Record the step's action in the ledger, in ``phase``."""
        plan, now, previous = step.plan, common.utcnow(), step.action
        step.action = remediation.RemediationAction(
            action_id=previous.action_id if previous else recording.new_action_id(),
            finding_key=step.finding_key,
            cluster=step.cluster,
            ref=step.ref,
            baseline=step.baseline,
            baseline_version=step.baseline_version,
            check=step.check,
            mode=step.mode,
            risk=plan.risk if plan is not None else findings.Risk.SAFE,
            phase=phase,
            patch=plan.patch if plan is not None else {},
            rationale=why,
            decided_at=previous.decided_at if previous else now,
            updated_at=now,
        )
        await self.ledger.record(step.action)

    async def conclude(
        self, step: Step, phase: Phase, action: audit.Action, outcome: audit.Outcome, why: str
    ) -> Phase:
        """Record the final ``phase`` and audit it; the phase."""
        await self.record(step, phase, why)
        await self.event(step, action, outcome, why)
        return phase

    async def skip(self, step: Step, why: str) -> Phase:
        """Conclude: policy says do nothing."""
        return await self.conclude(step, Phase.SKIPPED, Act.SKIPPED, Out.NONE, why)

    async def escalate(self, step: Step, why: str) -> Phase:
        """Conclude: not ours to fix; a human acts."""
        return await self.conclude(step, Phase.ESCALATED, Act.ESCALATED, Out.NONE, why)
