"""Planning: a finding's fix and the live object become a :class:`Plan` (pure: no I/O).

A plan says which object to write (with its uid and resourceVersion as preconditions), the
server-side apply configuration, the pre-image of every field it changes (enough to roll back
from the audit event alone), and the risk class. Pod-spec fixes never touch a Pod that a
controller owns: :func:`owner_to_fix` names the controller to read next (ReplicaSet ->
Deployment, Job -> CronJob), and the template is patched there. A bare Pod's spec cannot
change, so its plan is a deletion, which always needs an approval.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from kposture.remediate import errors, fields, fixes
from kposture.schemas import common, findings

FIELD_MANAGER = "kposture"
"""The field manager of every write kposture makes."""

Risk = findings.Risk

TEMPLATE_PATHS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("", "PodTemplate"): ("template",),
    ("", "ReplicationController"): ("spec", "template"),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
"""(API group, kind) -> path of the pod template, for the kinds whose template may change.

A Job's template is immutable, so a Job is fixed through its CronJob or not at all.
"""

_FOLLOWED_OWNERS = frozenset({("apps", "ReplicaSet"), ("batch", "Job")})
_RISK_ORDER = (Risk.SAFE, Risk.DISRUPTIVE, Risk.NEEDS_APPROVAL)


class Operation(enum.StrEnum):
    """What the plan does to its target."""

    APPLY = "apply"  # server-side apply of ``patch`` (creates the object if ``target.uid`` is "")
    TAKE_OVER = "take-over"  # guarded JSON Patch of fields only imperative writers own
    DELETE = "delete"  # delete the target (bare Pods only), with an approval


@dataclasses.dataclass(frozen=True)
class Plan:
    """One planned write. ``target.uid``/``target.resource_version`` are its preconditions."""

    check: str
    operation: Operation
    target: common.ObjectRef
    patch: dict[str, Any]
    pre_image: dict[str, Any]
    risk: Risk
    rationale: str
    changed: tuple[str, ...]  # rendered paths of the fields the patch sets
    canary_group: str = ""  # disruptive plans of one group share one canary
    generation: int | None = None  # the target's metadata.generation when planned


def group_of(api_version: str) -> str:
    """The API group of ``apiVersion`` (``"apps/v1"`` -> ``"apps"``, ``"v1"`` -> ``""``)."""
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def ref_of(obj: Mapping[str, Any]) -> common.ObjectRef:
    """The reference of a live object, its uid and resourceVersion included."""
    meta = obj.get("metadata") or {}
    return common.ObjectRef(
        api_version=str(obj.get("apiVersion", "")),
        kind=str(obj.get("kind", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "") or ""),
        resource_version=str(meta.get("resourceVersion", "")),
    )


def highest(*risks: Risk | None) -> Risk:
    """The most careful of ``risks`` (None entries are ignored; SAFE if all are None)."""
    present = [r for r in risks if r is not None]
    return max(present, key=_RISK_ORDER.index, default=Risk.SAFE)


def controller_owner(obj: Mapping[str, Any]) -> common.ObjectRef | None:
    """The controlling owner of ``obj`` (``controller: true``), or None."""
    meta = obj.get("metadata") or {}
    for owner in meta.get("ownerReferences") or ():
        if owner.get("controller"):
            return common.ObjectRef(
                api_version=owner["apiVersion"],
                kind=owner["kind"],
                name=owner["name"],
                uid=owner.get("uid", ""),
                namespace=str(meta.get("namespace", "") or ""),
            )
    return None


def _pod_fix(fix: fixes.Fix, obj: Mapping[str, Any]) -> bool:
    return fix.scope is fixes.Scope.POD_SPEC or (
        fix.also_pod_spec and str(obj.get("kind")) not in fix.kinds
    )


def owner_to_fix(fix: fixes.Fix, obj: Mapping[str, Any]) -> common.ObjectRef | None:
    """The owner to read and fix instead of ``obj``, or None when ``obj`` itself is the target.

    A Pod's controller, a ReplicaSet's Deployment and a Job's CronJob own the template that
    produced the object; fixing the object itself would be undone by its controller.
    """
    if not _pod_fix(fix, obj):
        return None
    owner = controller_owner(obj)
    if owner is None:
        return None
    if obj.get("kind") == "Pod":
        return owner
    if (group_of(str(obj.get("apiVersion", ""))), obj.get("kind")) in _FOLLOWED_OWNERS:
        return owner
    return None


def plan(
    check: str,
    obj: Mapping[str, Any],
    *,
    cluster: str,
    finding_risk: Risk | None = None,
) -> Plan | None:
    """The plan for ``check`` on the live ``obj``, or None when the fix already holds.

    Raises :class:`errors.NoFixError` when the check has no fix for this kind and
    :class:`errors.UnsafeTargetError` when the object cannot be changed in place.
    """
    fix = fixes.lookup(check)
    if fix is None:
        raise errors.NoFixError(f"check {check!r} has no mechanical fix")
    ref = ref_of(obj)
    if _pod_fix(fix, obj):
        return _plan_pod_spec(fix, obj, ref, cluster=cluster, finding_risk=finding_risk)
    if ref.kind not in fix.kinds:
        raise errors.NoFixError(f"{fix.check} fixes {sorted(fix.kinds)}, not {ref.kind}")
    change = fix.build(obj)
    if change is None:
        return None
    if fix.scope is fixes.Scope.NAMESPACE:
        created = ref_of(change)
        return Plan(
            check=fix.check,
            operation=Operation.APPLY,
            target=created,
            patch=change,
            pre_image={"created": True},
            risk=highest(fix.risk, finding_risk),
            rationale=f"{fix.check}: {fix.description} (in namespace {ref.name})",
            changed=(f"{created.kind}/{created.name}",),
        )
    return _finish(fix, obj, ref, change, cluster=cluster, risk=highest(fix.risk, finding_risk))


def _plan_pod_spec(
    fix: fixes.Fix,
    obj: Mapping[str, Any],
    ref: common.ObjectRef,
    *,
    cluster: str,
    finding_risk: Risk | None,
) -> Plan | None:
    if ref.kind == "Pod":
        if fix.holds(obj.get("spec") or {}):
            return None
        if controller_owner(obj) is not None:
            raise errors.UnsafeTargetError(
                f"Pod {ref.namespace}/{ref.name} has a controller: fix its template instead"
            )
        return _plan_delete(fix, obj, ref)
    template_path = TEMPLATE_PATHS.get((group_of(ref.api_version), ref.kind))
    if template_path is None:
        raise errors.UnsafeTargetError(f"{ref.kind} has no mutable pod template")
    found, template = fields.get(obj, template_path)
    spec = (template or {}).get("spec") or {} if found else {}
    change = fix.build(spec)
    if change is None:
        return None
    nested: dict[str, Any] = {"spec": change}
    for key in reversed(template_path):
        nested = {key: nested}
    # Any pod-template change restarts the pods: at least disruptive, whatever the check says.
    risk = highest(fix.risk, finding_risk, Risk.DISRUPTIVE)
    return _finish(fix, obj, ref, nested, cluster=cluster, risk=risk)


def _finish(
    fix: fixes.Fix,
    obj: Mapping[str, Any],
    ref: common.ObjectRef,
    change: dict[str, Any],
    *,
    cluster: str,
    risk: Risk,
) -> Plan:
    metadata: dict[str, Any] = {"name": ref.name, "uid": ref.uid}
    if ref.namespace:
        metadata["namespace"] = ref.namespace
    if ref.resource_version:
        # In an apply configuration, resourceVersion is a precondition, never a managed field.
        metadata["resourceVersion"] = ref.resource_version
    change_metadata = change.pop("metadata", None) or {}
    changed = tuple(fields.render(path) for path, _ in fields.leaves(change))
    # Carry the fields an earlier fix applied, at their live values: an apply that leaves
    # them out would make the apiserver remove them, undoing that fix.
    kept = fields.applied_by(
        (obj.get("metadata") or {}).get("managedFields"), obj, manager=FIELD_MANAGER
    )
    body = fields.merge_apply(kept, {"metadata": change_metadata, **change})
    body_metadata = body.pop("metadata", None) or {}
    patch = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "metadata": {**body_metadata, **metadata},
        **body,
    }
    return Plan(
        check=fix.check,
        operation=Operation.APPLY,
        target=ref,
        patch=patch,
        pre_image=pre_image(obj, patch),
        risk=risk,
        rationale=f"{fix.check}: {fix.description} ({ref.subject}: {', '.join(changed)})",
        changed=changed,
        canary_group=f"{cluster}/{fix.check}" if risk is Risk.DISRUPTIVE else "",
        generation=(obj.get("metadata") or {}).get("generation"),
    )


def _plan_delete(fix: fixes.Fix, obj: Mapping[str, Any], ref: common.ObjectRef) -> Plan:
    return Plan(
        check=fix.check,
        operation=Operation.DELETE,
        target=ref,
        patch={},
        pre_image={"deleted": restorable(obj)},
        risk=Risk.NEEDS_APPROVAL,
        rationale=(
            f"{fix.check}: bare Pod {ref.namespace}/{ref.name} has no controller and its spec "
            "cannot change; deleting it needs an approval"
        ),
        changed=(f"Pod/{ref.name}",),
    )


def restorable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without the fields the apiserver owns, so that it can be created again."""
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k
        not in {
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        }
    }
    return {**{k: v for k, v in obj.items() if k not in {"status", "metadata"}}, "metadata": meta}


def pre_image(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The values the patch changes, as they are in ``obj`` now.

    ``present`` maps each rendered path to its current value; ``absent`` lists the shallowest
    missing ancestor of each field that does not exist yet, so that rolling back removes
    exactly what the apply added (an empty ``securityContext`` left behind is not "exactly").
    """
    present: dict[str, Any] = {}
    absent: list[str] = []
    for path, _ in fields.leaves(patch):
        missing = fields.shallowest_missing(obj, path)
        if missing is None:
            present[fields.render(path)] = fields.get(obj, path)[1]
        elif fields.render(missing) not in absent:
            absent.append(fields.render(missing))
    return {"present": present, "absent": absent}


def rollback_ops(
    pre: Mapping[str, Any], patch: Mapping[str, Any], current: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The JSON Patch that restores ``pre`` in ``current``, guarded by ``test`` operations.

    The tests check that every field still holds what the apply wrote, so a rollback never
    overwrites a change someone made after us; the apiserver rejects the whole patch instead.
    Raises ``KeyError`` when a field's list element no longer exists.
    """
    ops: list[dict[str, Any]] = []
    absent = [fields.parse(p) for p in pre.get("absent", ())]
    for path, value in fields.leaves(patch):
        if not any(path[: len(a)] == a for a in absent):
            ops.append({"op": "test", "path": fields.pointer(current, path), "value": value})
    for path in absent:
        found, written = fields.get(patch, path)
        if found:
            ops.append({"op": "test", "path": fields.pointer(current, path), "value": written})
    for text, value in (pre.get("present") or {}).items():
        ops.append(
            {"op": "replace", "path": fields.pointer(current, fields.parse(text)), "value": value}
        )
    ops.extend({"op": "remove", "path": fields.pointer(current, path)} for path in absent)
    return ops


def takeover_ops(plan: Plan, current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch that writes ``plan.patch``'s fields into ``current``, guarded by tests.

    Used only for fields whose sole owners are imperative writers (see
    ``policy.takeover_refusal``): server-side apply would report a conflict and we never force.
    The ``test`` operations pin the uid, the resourceVersion and every old value of the
    pre-image, so the write lands only on exactly the object that was planned.
    """
    meta = current.get("metadata") or {}
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")},
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
    ]
    absent = [fields.parse(p) for p in plan.pre_image.get("absent", ())]
    for text, value in (plan.pre_image.get("present") or {}).items():
        path = fields.parse(text)
        pointer = fields.pointer(current, path)
        ops.append({"op": "test", "path": pointer, "value": value})
        ops.append({"op": "replace", "path": pointer, "value": fields.get(plan.patch, path)[1]})
    for path in absent:
        found, subtree = fields.get(plan.patch, path)
        if found:
            ops.append({"op": "add", "path": fields.pointer(current, path), "value": subtree})
    return ops
