"""``Finding``: a transition of one check on one object (topic ``findings``).

Evaluate emits only transitions, never the unchanged current state: a finding opens, is updated
(its message or severity changed), is resolved (fixed, or the object deleted), or is waived (an
exception applies). The key ``<cluster>/<uid>/<baseline>/<check>`` keeps one finding's
transitions in order.
"""

from __future__ import annotations

import enum

import msgspec

from kposture.schemas import common


class Transition(enum.StrEnum):
    """How the finding changed with this record."""

    OPENED = "opened"
    UPDATED = "updated"  # message, severity or priority changed while still failing
    RESOLVED = "resolved"  # the check passes now, or the object is gone
    WAIVED = "waived"  # an exception covers it; it reopens when the exception expires


class RemediationMode(enum.StrEnum):
    """What the remediator is allowed to do for this finding's scope."""

    OBSERVE = "observe"  # do nothing (the default)
    DRY_RUN = "dry-run"  # plan, server-side dry run and audit; change nothing
    ENFORCE = "enforce"  # apply the fix, with the safeguards of its risk class


class Risk(enum.StrEnum):
    """How dangerous a fix is, as declared by the baseline."""

    SAFE = "safe"  # applied directly in enforce mode
    DISRUPTIVE = "disruptive"  # restarts pods or can deny traffic: canary first
    NEEDS_APPROVAL = "needs-approval"  # RBAC changes, deletions: a human approves


class Waiver(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The exception that waives a finding, as written by the platform team."""

    name: str
    reason: str
    owner: str
    ticket: str
    expires: common.Timestamp | None = None


class Remediation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whether the check has a fix, and what may be done with it here."""

    available: bool
    mode: RemediationMode = RemediationMode.OBSERVE
    risk: Risk | None = None


class Finding(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One transition of one check on one object, with everything a SIEM needs to act on it.

    ``priority`` (0-100) combines the severity with the object's exposure (privileged service
    account, a LoadBalancer/NodePort Service or an Ingress in front of it, the namespace's
    criticality label). ``first_seen`` is when this finding first opened; ``observed_at`` when
    the change was seen in the cluster; ``detected_at`` when evaluate produced this record.
    """

    cluster: str
    ref: common.ObjectRef
    baseline: str
    baseline_version: str
    check: str
    title: str
    controls: list[str]
    severity: common.Severity
    result: common.Result
    state: Transition
    message: str
    path: str
    first_seen: common.Timestamp
    observed_at: common.Timestamp
    detected_at: common.Timestamp
    priority: int = 0
    owner: str | None = None
    exception: Waiver | None = None
    remediation: Remediation = Remediation(available=False)

    @property
    def key(self) -> str:
        """The Kafka key: ``<cluster>/<uid>/<baseline>/<check>``."""
        return finding_key(self.cluster, self.ref.uid, self.baseline, self.check)


def finding_key(cluster: str, uid: str, baseline: str, check: str) -> str:
    """The key of a finding, also its stable identity across transitions."""
    return f"{cluster}/{uid}/{baseline}/{check}"
