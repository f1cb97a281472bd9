"""Verifying: does a fix hold on the re-read object, and is the rollout healthy? (pure)

Verification re-evaluates the fix's own condition on the object as the apiserver returns it
after the write (so a mutating webhook or a controller that reverted us is caught), and for a
disruptive fix, reads the rollout status of the workload: a canary passes only when the
rollout completed and stayed available.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from kposture.remediate import fields, fixes, planning


class Health(enum.StrEnum):
    """The state of a workload's rollout."""

    HEALTHY = "healthy"  # every replica runs the new template and is available
    PROGRESSING = "progressing"  # still rolling out: wait
    FAILED = "failed"  # the rollout will not complete (progress deadline exceeded)


def fix_holds(check: str, obj: Mapping[str, Any]) -> bool:
    """True when ``check``'s fix holds on ``obj`` (a controller's template, or the object)."""
    fix = fixes.lookup(check)
    if fix is None:
        return False
    kind = (planning.group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")))
    pod_scoped = fix.scope is fixes.Scope.POD_SPEC or (
        fix.also_pod_spec and kind[1] not in fix.kinds
    )
    if not pod_scoped:
        return fix.holds(obj)
    if kind[1] == "Pod":
        return fix.holds(obj.get("spec") or {})
    path = planning.TEMPLATE_PATHS.get(kind)
    if path is None:
        return False
    _, template = fields.get(obj, path)
    return fix.holds((template or {}).get("spec") or {})


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def rollout(obj: Mapping[str, Any]) -> tuple[Health, str]:
    """The rollout health of a Deployment, StatefulSet or DaemonSet; others are healthy."""
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind not in ("Deployment", "StatefulSet", "DaemonSet"):
        return Health.HEALTHY, f"{kind} has no rollout"
    if _int(status.get("observedGeneration")) < _int(meta.get("generation")):
        return Health.PROGRESSING, "the controller has not seen the new generation yet"
    if kind == "Deployment":
        return _deployment(spec, status)
    if kind == "StatefulSet":
        wanted = _int(spec.get("replicas"), 1)
        if status.get("updateRevision") and status.get("currentRevision") != status.get(
            "updateRevision"
        ):
            return Health.PROGRESSING, "pods still run the previous revision"
        if _int(status.get("availableReplicas", status.get("readyReplicas"))) < wanted:
            return Health.PROGRESSING, f"{status.get('readyReplicas', 0)}/{wanted} ready"
        return Health.HEALTHY, f"{wanted}/{wanted} updated and available"
    desired = _int(status.get("desiredNumberScheduled"))
    if _int(status.get("updatedNumberScheduled")) < desired:
        return Health.PROGRESSING, f"{status.get('updatedNumberScheduled', 0)}/{desired} updated"
    if _int(status.get("numberAvailable")) < desired or _int(status.get("numberUnavailable")):
        return Health.PROGRESSING, f"{status.get('numberAvailable', 0)}/{desired} available"
    return Health.HEALTHY, f"{desired}/{desired} updated and available"


def _deployment(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[Health, str]:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return Health.FAILED, f"progress deadline exceeded: {condition.get('message', '')}"
    wanted = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    available = _int(status.get("availableReplicas"))
    total = _int(status.get("replicas"))
    if updated < wanted:
        return Health.PROGRESSING, f"{updated}/{wanted} replicas updated"
    if total > updated:
        return Health.PROGRESSING, f"{total - updated} old replica(s) still terminating"
    if available < wanted or _int(status.get("unavailableReplicas")):
        return Health.PROGRESSING, f"{available}/{wanted} replicas available"
    return Health.HEALTHY, f"{wanted}/{wanted} replicas updated and available"
