"""``RemediationAction``: the remediator's decision record (compacted topic ``remediations``).

The decision for (cluster, uid, check, baseline version, object resourceVersion) is written
before and after acting, keyed by that tuple, so a redelivered finding or a restart between
apply and audit finds the earlier decision and never writes twice.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from kposture.schemas import common, findings


class Phase(enum.StrEnum):
    """Where an action stands. Terminal phases end with ``applied``/``verified`` or a refusal."""

    PLANNED = "planned"
    PENDING_APPROVAL = "pending-approval"
    APPROVED = "approved"
    DRY_RUN = "dry-run"  # the server-side dry run passed; nothing was changed
    APPLIED = "applied"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled-back"
    ESCALATED = "escalated"  # not ours to fix (GitOps, field-manager conflict): a human acts
    SKIPPED = "skipped"  # policy says do nothing (observe mode, opted out)
    NO_OP = "no-op"  # a redelivery of an already decided action
    FAILED = "failed"


class RemediationAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One remediation decision and its current phase."""

    action_id: str
    finding_key: str
    cluster: str
    ref: common.ObjectRef
    baseline: str
    baseline_version: str
    check: str
    mode: findings.RemediationMode
    risk: findings.Risk
    phase: Phase
    patch: dict[str, Any]
    rationale: str
    decided_at: common.Timestamp
    updated_at: common.Timestamp

    @property
    def key(self) -> str:
        """The idempotency key: cluster, uid, check, baseline version and resourceVersion."""
        return decision_key(
            self.cluster, self.ref.uid, self.check, self.baseline_version, self.ref.resource_version
        )


def decision_key(
    cluster: str, uid: str, check: str, baseline_version: str, resource_version: str
) -> str:
    """The compacted-topic key under which one decision is recorded."""
    return f"{cluster}/{uid}/{check}/{baseline_version}/{resource_version}"
