"""Tracking findings: from one object's previous open findings and new verdicts to transitions.

The stream processor keeps, per object, the findings that are open now (failing or erroring,
possibly waived). Given the engine's new verdicts it emits exactly the changes: ``opened``,
``updated`` (message, severity, priority, result or baseline version changed), ``resolved``
(the check passes, no longer applies, or the object is gone) and ``waived`` (an exception
covers it). Nothing is emitted when nothing changed, so redelivered or unchanged events are
silent. A waived finding whose exception expired is emitted as ``opened`` again, with its
original ``first_seen``.

Everything here is a pure function of data and of the time passed in (``now``), so tests
control waiver expiry with a fake clock; the module imports no asyncio, Kafka or faust.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import msgspec

from kposture.evaluate.engine import workloads
from kposture.evaluate.policy import waivers
from kposture.schemas import common, findings

if TYPE_CHECKING:
    from kposture.evaluate.engine import evaluating

CRITICALITY_LABEL = "kposture.io/criticality"
"""Namespace (or object) label that raises or lowers the priority of its findings."""

OWNER_KEYS = ("owner", "team")
"""Labels, then annotations, naming who owns an object (the namespace's are the fallback)."""

_BAD = (common.Result.FAIL, common.Result.ERROR)
_SEVERITY_BASE = {
    common.Severity.CRITICAL: 80,
    common.Severity.HIGH: 60,
    common.Severity.MEDIUM: 40,
    common.Severity.LOW: 20,
    common.Severity.INFO: 5,
}
_CRITICALITY_BONUS = {"critical": 15, "high": 10, "medium": 0, "low": -10}
_EXPOSED_SERVICE_TYPES = ("LoadBalancer", "NodePort")


class OpenFinding(msgspec.Struct, frozen=True, kw_only=True):
    """A finding that is open now (failing or erroring, waived or not), as kept in state."""

    baseline: str
    check: str
    baseline_version: str
    title: str
    controls: tuple[str, ...]
    severity: common.Severity
    result: common.Result  # fail or error
    message: str
    path: str
    priority: int
    first_seen: common.Timestamp
    waiver: findings.Waiver | None = None
    fix_risk: findings.Risk | None = None  # the check has a fix of this risk class

    @property
    def ident(self) -> tuple[str, str]:
        """``(baseline, check)``: the finding's identity within one object."""
        return (self.baseline, self.check)


class Verdict(msgspec.Struct, frozen=True):
    """What one check says about the object now, reduced to what tracking compares."""

    baseline: str
    baseline_version: str
    check: str
    result: common.Result
    severity: common.Severity
    controls: tuple[str, ...]
    message: str
    path: str
    title: str
    fix_risk: findings.Risk | None = None

    @classmethod
    def of(cls, result: evaluating.CheckResult) -> Verdict:
        """The verdict of an engine result."""
        return cls(
            baseline=result.baseline,
            baseline_version=result.baseline_version,
            check=result.check_id,
            result=result.result,
            severity=result.severity,
            controls=tuple(result.controls),
            message=result.message,
            path=result.path,
            title=result.title,
            fix_risk=result.fix.risk if result.fix is not None else None,
        )

    @classmethod
    def still(cls, finding: OpenFinding) -> Verdict:
        """The verdict that keeps an open finding as it is (used when nothing was re-run)."""
        return cls(
            baseline=finding.baseline,
            baseline_version=finding.baseline_version,
            check=finding.check,
            result=finding.result,
            severity=finding.severity,
            controls=finding.controls,
            message=finding.message,
            path=finding.path,
            title=finding.title,
            fix_risk=finding.fix_risk,
        )


class Exposure(msgspec.Struct, frozen=True):
    """What raises a finding's priority beyond its severity.

    ``externally_exposed``: the object is reachable from outside the cluster (a LoadBalancer or
    NodePort Service, an Ingress, or a pod on the host network or with host ports).
    ``privileged_service_account``: the pod runs as a service account that a bound role lets
    read secrets (``cluster-admin`` among others). ``criticality``: the
    ``kposture.io/criticality`` label of the object or else of its namespace.
    """

    externally_exposed: bool = False
    privileged_service_account: bool = False
    criticality: str | None = None


class Context(msgspec.Struct, frozen=True):
    """Where the verdicts come from: the object, its namespace, the time, the exceptions."""

    cluster: str
    ref: common.ObjectRef
    labels: Mapping[str, str]
    observed_at: dt.datetime
    now: dt.datetime
    owner: str | None = None
    exposure: Exposure = Exposure()
    waivers: Sequence[waivers.Waiver] = ()


class Outcome(msgspec.Struct, frozen=True):
    """The open findings to keep and the transitions to publish, in check order."""

    open: tuple[OpenFinding, ...]
    transitions: list[findings.Finding]


def priority(severity: common.Severity, exposure: Exposure) -> int:
    """0-100: the severity's base, raised by exposure and by the namespace's criticality."""
    score = _SEVERITY_BASE[severity]
    if exposure.externally_exposed:
        score += 10
    if exposure.privileged_service_account:
        score += 10
    score += _CRITICALITY_BONUS.get((exposure.criticality or "").lower(), 0)
    return max(0, min(100, score))


@dataclasses.dataclass(frozen=True)
class Surroundings:
    """What the other objects of a namespace say about the exposure of its pods.

    ``selectors``: the selectors (``(label, value)`` pairs) of the Services that expose the pods
    they select: LoadBalancer and NodePort Services, and any Service an Ingress routes to.
    ``privileged``: the namespace's service accounts that a bound role lets read secrets.
    """

    selectors: tuple[tuple[tuple[str, str], ...], ...] = ()
    privileged: frozenset[str] = frozenset()

    def exposes(self, labels: Mapping[str, Any]) -> bool:
        """Whether a Service that exposes its pods selects pods with ``labels``."""
        return any(all(labels.get(k) == v for k, v in selector) for selector in self.selectors)


def exposure_of(
    obj: Mapping[str, Any],
    namespace_obj: Mapping[str, Any] | None,
    surroundings: Surroundings | None = None,
) -> Exposure:
    """The exposure of one object: by itself, its namespace and, for a pod or pod template,
    its ``surroundings`` (the Services that select it, the RBAC of its service account)."""
    kind = obj.get("kind")
    raw_spec = obj.get("spec")
    spec: Mapping[str, Any] = raw_spec if _is_mapping(raw_spec) else {}
    exposed = kind == "Ingress" or (
        kind == "Service" and spec.get("type") in _EXPOSED_SERVICE_TYPES
    )
    pod_spec = _pod_spec(obj)
    if not exposed:
        exposed = _on_host_network(pod_spec)
    privileged = False
    template = _template_path(obj) if surroundings is not None else None
    if surroundings is not None and template is not None:
        if not exposed and surroundings.selectors:
            view = workloads.pod_view(obj, template)
            exposed = view is not None and surroundings.exposes(_labels(view))
        account = pod_spec.get("serviceAccountName") or "default"
        privileged = account in surroundings.privileged
    criticality = _labels(obj).get(CRITICALITY_LABEL)
    if criticality is None and namespace_obj is not None:
        criticality = _labels(namespace_obj).get(CRITICALITY_LABEL)
    return Exposure(
        externally_exposed=exposed,
        privileged_service_account=privileged,
        criticality=criticality,
    )


def _template_path(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    # Where a Pod-running kind keeps its pod template (``()``: the object is the Pod).
    api_version = obj.get("apiVersion")
    group = workloads.group_of(api_version if isinstance(api_version, str) else "")
    return workloads.TEMPLATE_PATHS.get((group, str(obj.get("kind"))))


def owner_of(obj: Mapping[str, Any], namespace_obj: Mapping[str, Any] | None) -> str | None:
    """The ``owner`` or ``team`` label or annotation of the object, else of its namespace."""
    for candidate in (obj, namespace_obj):
        if candidate is None:
            continue
        metadata = candidate.get("metadata") or {}
        for field in ("labels", "annotations"):
            values = metadata.get(field) or {}
            for key in OWNER_KEYS:
                if isinstance(values.get(key), str) and values[key]:
                    return str(values[key])
    return None


def track(
    previous: Sequence[OpenFinding], verdicts: Iterable[Verdict], context: Context
) -> Outcome:
    """Compare the open findings with new verdicts; return what stays open and what changed.

    A previous finding without a failing verdict now (it passes, is skipped, or its check is
    gone from the policy) is resolved. ``verdicts`` for checks that are not open and pass
    produce nothing.
    """
    before = {finding.ident: finding for finding in previous}
    kept: list[OpenFinding] = []
    out: list[findings.Finding] = []
    seen: set[tuple[str, str]] = set()
    for verdict in verdicts:
        ident = (verdict.baseline, verdict.check)
        old = before.get(ident)
        if verdict.result not in _BAD:
            if old is not None and ident not in seen:
                seen.add(ident)
                out.append(_record(old, findings.Transition.RESOLVED, context, verdict))
            continue
        seen.add(ident)
        current = _open(verdict, old, context)
        kept.append(current)
        state = _transition(old, current)
        if state is not None:
            out.append(_record(current, state, context))
    for ident, old in before.items():
        if ident not in seen:
            out.append(_record(old, findings.Transition.RESOLVED, context, None))
    return Outcome(open=tuple(kept), transitions=out)


def refresh(previous: Sequence[OpenFinding], context: Context) -> Outcome:
    """Re-apply exceptions and priority to unchanged findings (an exception expired, say)."""
    if not context.waivers:
        exposure = context.exposure
        scores: dict[common.Severity, int] = {}  # priority by severity, for this exposure
        for finding in previous:
            if finding.waiver is not None:
                break
            score = scores.get(finding.severity)
            if score is None:
                score = scores[finding.severity] = priority(finding.severity, exposure)
            if finding.priority != score:
                break
        else:
            # The common case (a resync, a status update): no exception can apply and the
            # priority is the same, so ``track`` would rebuild every finding equal to itself.
            return Outcome(open=tuple(previous), transitions=[])
    return track(previous, [Verdict.still(finding) for finding in previous], context)


def gone(previous: Sequence[OpenFinding], context: Context) -> Outcome:
    """The object was deleted: resolve every open finding."""
    return track(previous, [], context)


def next_expiry(active: Iterable[waivers.Waiver], now: dt.datetime) -> dt.datetime | None:
    """When the next exception still in force expires (``None`` if none will)."""
    times = [w.expires for w in active if w.expires is not None and w.expires > now]
    return min(times, default=None)


def _open(verdict: Verdict, old: OpenFinding | None, context: Context) -> OpenFinding:
    found = None
    if context.waivers:  # most objects run with no exception at all: skip the lookup
        found = waivers.find_waiver(
            context.waivers,
            waivers.FindingContext(
                cluster=context.cluster,
                baseline=verdict.baseline,
                check_id=verdict.check,
                kind=context.ref.kind,
                name=context.ref.name,
                namespace=context.ref.namespace,
                labels=context.labels,
            ),
            clock=lambda: context.now,
        )
    waiver = None
    if found is not None:
        waiver = findings.Waiver(
            name=found.name,
            reason=found.reason,
            owner=found.owner,
            ticket=found.ticket,
            expires=found.expires,
        )
    current = OpenFinding(
        baseline=verdict.baseline,
        check=verdict.check,
        baseline_version=verdict.baseline_version,
        title=verdict.title,
        controls=verdict.controls,
        severity=verdict.severity,
        result=verdict.result,
        message=verdict.message,
        path=verdict.path,
        priority=priority(verdict.severity, context.exposure),
        first_seen=old.first_seen if old is not None else context.now,
        waiver=waiver,
        fix_risk=verdict.fix_risk,
    )
    # Keep the stored instance when nothing changed, so callers compare states by identity.
    return old if old is not None and old == current else current


def _transition(old: OpenFinding | None, new: OpenFinding) -> findings.Transition | None:
    if new.waiver is not None:
        # While waived, changes of the failure itself are kept quietly; only a new or different
        # exception is news.
        if old is None or old.waiver != new.waiver:
            return findings.Transition.WAIVED
        return None
    if old is None or old.waiver is not None:
        return findings.Transition.OPENED
    changed = (
        old.message != new.message
        or old.severity != new.severity
        or old.priority != new.priority
        or old.result != new.result
        or old.baseline_version != new.baseline_version
    )
    return findings.Transition.UPDATED if changed else None


def _record(
    finding: OpenFinding,
    state: findings.Transition,
    context: Context,
    now_passing: Verdict | None = None,
) -> findings.Finding:
    """The published record; ``now_passing`` is the verdict that resolved it, if any."""
    result = finding.result
    message = finding.message
    version = finding.baseline_version
    if state is findings.Transition.RESOLVED:
        # Resolved by a verdict: its result (pass, or skip when the check stopped applying).
        # Resolved by a delete or a withdrawn check: skip, as the check no longer applies.
        result = now_passing.result if now_passing is not None else common.Result.SKIP
        version = now_passing.baseline_version if now_passing is not None else version
        message = "the object was deleted" if now_passing is None else "the check passes now"
        if now_passing is not None and now_passing.result is common.Result.SKIP:
            message = now_passing.message or "the check no longer applies"
    remediable = (
        state in (findings.Transition.OPENED, findings.Transition.UPDATED)
        and finding.result is common.Result.FAIL
        and finding.fix_risk is not None
    )
    return findings.Finding(
        cluster=context.cluster,
        ref=context.ref,
        baseline=finding.baseline,
        baseline_version=version,
        check=finding.check,
        title=finding.title,
        controls=list(finding.controls),
        severity=finding.severity,
        result=result,
        state=state,
        message=message,
        path=finding.path if state is not findings.Transition.RESOLVED else "",
        first_seen=finding.first_seen,
        observed_at=context.observed_at,
        detected_at=context.now,
        priority=finding.priority,
        owner=context.owner,
        exception=finding.waiver if state is findings.Transition.WAIVED else None,
        remediation=findings.Remediation(
            available=remediable, risk=finding.fix_risk if remediable else None
        ),
    )


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # ``isinstance`` against the ABC is slow, and the objects here are (almost) always dicts.
    return type(value) is dict or isinstance(value, Mapping)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if _is_mapping(labels) else {}


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = obj
    path: tuple[str, ...] = ("spec",)
    kind = obj.get("kind")
    if kind == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template", "spec")
    elif kind != "Pod":
        path = ("spec", "template", "spec")
    for key in path:
        node = node.get(key) if _is_mapping(node) else None
    return node if _is_mapping(node) else {}


def _on_host_network(spec: Mapping[str, Any]) -> bool:
    if spec.get("hostNetwork") is True:
        return True
    for container in spec.get("containers") or ():
        for port in (container or {}).get("ports") or ():
            if _is_mapping(port) and port.get("hostPort"):
                return True
    return False
