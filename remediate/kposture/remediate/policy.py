"""Policy: whether a finding may be acted on, in which mode, and with which safeguards (pure).

Three questions, in the order the service asks them:

1. :func:`screen` -- is the finding actionable at all? Only ``opened``/``updated`` findings whose
   check *failed* are; a check that could not be evaluated (``error``) is never remediated.
2. :func:`resolve_mode` -- the most specific setting wins: the namespace label
   ``kposture.io/mode``, then the config's ``<baseline>/<check>``, then ``<baseline>``, then the
   default. ``kposture.io/remediation: off`` on the object or its namespace opts out.
3. :func:`judge` -- given the plan: an object managed by GitOps (Argo CD or Flux labels or
   annotations, or a field we would change owned by their field managers) is escalated with
   the patch as a suggestion for its git source; automation service accounts never lose
   permissions without an approval.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from kposture.remediate import fields, fixes, planning
from kposture.runtime import settings as settings_mod
from kposture.schemas import common, findings

Mode = findings.RemediationMode
Risk = findings.Risk

MODE_LABEL = "kposture.io/mode"
OPT_OUT_LABEL = "kposture.io/remediation"

GITOPS_MANAGERS = frozenset(
    {
        "argocd-controller",
        "argocd-application-controller",
        "argocd-server",
        "kustomize-controller",
        "helm-controller",
        "source-controller",
        "flux",
    }
)
"""Field managers of GitOps controllers: a field they own is declared in git, not here."""

DECLARATIVE_UPDATE_MANAGERS = frozenset({"kubectl-client-side-apply", "helm", "Helm"})
"""Managers that write with updates but re-assert their fields on the next run of their tool."""

_GITOPS_LABELS = ("argocd.argoproj.io/instance", "app.kubernetes.io/managed-by=argocd")
_GITOPS_KEY_PARTS = ("argocd.argoproj.io/", ".toolkit.fluxcd.io/")


class Verdict(enum.StrEnum):
    """What the service does with a finding."""

    IGNORE = "ignore"  # not a remediation decision at all (resolved, passing): not audited
    SKIP = "skip"  # policy says do nothing: audited as skipped
    ACT = "act"  # plan, dry run and (in enforce mode) apply
    ESCALATE = "escalate"  # not ours to fix: a human acts on the suggestion


@dataclasses.dataclass(frozen=True)
class Decision:
    """A verdict with its reason (which goes into the audit event's rationale)."""

    verdict: Verdict
    reason: str
    mode: Mode = Mode.OBSERVE
    risk: Risk | None = None


def screen(finding: findings.Finding) -> Decision | None:
    """A decision when the finding alone settles it, or None to go on and read the cluster."""
    if finding.state not in (findings.Transition.OPENED, findings.Transition.UPDATED):
        return Decision(Verdict.IGNORE, f"{finding.state} findings need no fix")
    if finding.result is common.Result.ERROR:
        return Decision(Verdict.SKIP, "the check could not be evaluated (error): never remediate")
    if finding.result is not common.Result.FAIL:
        return Decision(Verdict.IGNORE, f"the check result is {finding.result}")
    if finding.exception is not None:
        return Decision(Verdict.SKIP, f"waived by exception {finding.exception.name}")
    if fixes.lookup(finding.check) is None:
        if finding.remediation.available:
            return Decision(Verdict.SKIP, f"no mechanical fix for {finding.check} in remediate")
        return Decision(Verdict.IGNORE, f"{finding.check} has no fix")
    return None


def _parse_mode(value: str | None) -> Mode | None:
    try:
        return Mode(value) if value is not None else None
    except ValueError:
        return None


def resolve_mode(
    finding: findings.Finding,
    *,
    namespace_labels: Mapping[str, str],
    settings: settings_mod.RemediateSettings,
) -> tuple[Mode, str]:
    """The mode for the finding's scope and where it came from (for the rationale).

    An invalid label or config value is passed over (the next level applies), so a typo never
    turns enforcement on.
    """
    candidates = (
        (namespace_labels.get(MODE_LABEL), f"namespace label {MODE_LABEL}"),
        (settings.modes.get(f"{finding.baseline}/{finding.check}"), "config baseline/check"),
        (settings.modes.get(finding.baseline), "config baseline"),
        (settings.default_mode, "default mode"),
    )
    for value, source in candidates:
        mode = _parse_mode(value)
        if mode is not None:
            return mode, source
    return Mode.OBSERVE, "built-in default"


def opted_out(obj: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """True when the object or its namespace carries ``kposture.io/remediation: off``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return "off" in (labels.get(OPT_OUT_LABEL), namespace_labels.get(OPT_OUT_LABEL))


def gitops_reason(obj: Mapping[str, Any], changed: Sequence[str]) -> str | None:
    """Why ``obj`` is managed by GitOps (a label, an annotation or a field owner), or None."""
    meta = obj.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    for item in _GITOPS_LABELS:
        key, _, value = item.partition("=")
        if key in labels and (not value or labels[key].lower() == value):
            return f"label {key}={labels[key]}"
    for source, mapping in (("label", labels), ("annotation", annotations)):
        for key in mapping:
            if any(part in key for part in _GITOPS_KEY_PARTS):
                return f"{source} {key}"
    managed = meta.get("managedFields")
    for text in changed:
        for owner in fields.owners(managed, fields.parse(text)):
            if owner.split(" ", 1)[0] in GITOPS_MANAGERS:
                return f"field {text} is owned by {owner}"
    return None


def _service_account_ids(value: str) -> str:
    # Accept "ns/name" and "system:serviceaccount:ns:name" in the config alike.
    if value.startswith("system:serviceaccount:"):
        namespace, _, name = value.removeprefix("system:serviceaccount:").partition(":")
        return f"{namespace}/{name}"
    return value


def accounts_losing_permissions(
    plan: planning.Plan, obj: Mapping[str, Any], automation: Sequence[str]
) -> list[str]:
    """The automation service accounts (``ns/name``) that the plan takes rights away from."""
    wanted = {_service_account_ids(a) for a in automation}
    losing: set[str] = set()
    fix = fixes.lookup(plan.check)
    if fix is not None and fix.removes_permissions:
        kept = plan.patch.get("subjects") or []
        for subject in obj.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount" and subject not in kept:
                losing.add(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
    if plan.check == "automountServiceAccountToken":
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "ServiceAccount":
            losing.add(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
        else:
            account = _pod_spec(obj).get("serviceAccountName") or "default"
            losing.add(f"{plan.target.namespace}/{account}")
    return sorted(losing & wanted)


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = (planning.group_of(str(obj.get("apiVersion"))), str(obj.get("kind")))
    path = planning.TEMPLATE_PATHS.get(kind)
    if path is None:
        return obj.get("spec") or {}
    _, template = fields.get(obj, path)
    return (template or {}).get("spec") or {}


def judge(
    plan: planning.Plan,
    *,
    obj: Mapping[str, Any],
    mode: Mode,
    settings: settings_mod.RemediateSettings,
) -> Decision:
    """The decision for a plan on ``obj`` (the object the plan writes, or the namespace)."""
    gitops = gitops_reason(obj, plan.changed)
    if gitops is not None:
        return Decision(
            Verdict.ESCALATE,
            f"managed by GitOps ({gitops}): change the git source; suggested patch attached",
            mode=mode,
            risk=plan.risk,
        )
    controller = controlled_by(obj)
    if controller is not None and plan.operation is not planning.Operation.DELETE:
        return Decision(
            Verdict.ESCALATE,
            f"controlled by {controller}, which would revert the fix: change it there",
            mode=mode,
            risk=plan.risk,
        )
    risk = plan.risk
    losing = accounts_losing_permissions(plan, obj, settings.automation_service_accounts)
    reason = plan.rationale
    if losing:
        risk = Risk.NEEDS_APPROVAL
        reason += f"; automation account(s) {', '.join(losing)} would lose permissions"
    return Decision(Verdict.ACT, reason, mode=mode, risk=risk)


def takeover_refusal(obj: Mapping[str, Any], changed: Sequence[str]) -> str | None:
    """Why the conflicting fields must not be taken over, or None when we may.

    Server-side apply reports a conflict for any other manager, and we never force. But a field
    whose only owners wrote it imperatively (``kubectl create``/``edit``, a client library's
    create, ``before-first-apply``) carries no declared intent that will come back; fixing it
    with a guarded JSON Patch is then safe. A field owned by an *Apply* manager, a GitOps
    controller, Helm or client-side ``kubectl apply`` is declared somewhere else: escalate.
    """
    managed = (obj.get("metadata") or {}).get("managedFields")
    others = [
        (text, owner)
        for text in changed
        for owner in fields.owners(managed, fields.parse(text))
        if not owner.startswith("kposture ")
    ]
    if not others:
        return "the conflicting owners are not in managedFields: not forced"
    for text, owner in others:
        name, _, operation = owner.partition(" ")
        if operation == "(Apply)" or name in GITOPS_MANAGERS or name in DECLARATIVE_UPDATE_MANAGERS:
            return f"field {text} is declared by {owner}: not forced"
    return None


def controlled_by(obj: Mapping[str, Any]) -> str | None:
    """The controller that owns ``obj`` (a fix there would be reverted by it), or None."""
    owner = planning.controller_owner(obj)
    return None if owner is None else f"{owner.kind} {owner.name}"
