"""The evaluation engine: resolved baselines in, one result per applicable check out.

Built once per policy set: every CEL expression is compiled once, rules are indexed by
(API group, kind) so an object only meets the checks that can apply to it, and each kind gets
the projection of the fields its checks read. ``evaluate`` is then a pure function of the object
(and its namespace), cheap enough to run for every watch event. The stream processor calls
``triage`` instead, which skips the pod-template checks of an object that a workload controls
(they are rolled up to the controller) unless one of them is open on it. The checks of one
object share an activation memo: repeated subexpressions (the list of every container) and
programs that several baselines repeat are computed once per object.

Results are ``common.Result`` values: ``pass``, ``fail``, ``error`` (the check could not be
evaluated: never remediate on it) and ``skip`` (the check's match excludes this object).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from kposture.evaluate.engine import projection, workloads
from kposture.evaluate.policy import baselines, cel, loading
from kposture.schemas import common

ROLLED_UP = "the pod template is evaluated on the object's controller"
"""Why a ``podSpec`` check skips an object that a workload controls (a ReplicaSet's Pod)."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The verdict of one check on one object.

    ``path`` is the offending field in the real object (for pod templates, under the
    template); it is empty when the check names none.
    """

    baseline: str
    baseline_version: str
    check_id: str
    result: common.Result
    severity: common.Severity
    controls: tuple[str, ...]
    message: str
    path: str
    title: str = ""
    fix: baselines.Fix | None = None

    @functools.cached_property
    def ident(self) -> tuple[str, str]:
        """``(baseline, check_id)``; one tuple per result, and results are mostly shared."""
        return (self.baseline, self.check_id)


class _Bound:
    """A rule ready to run on one kind: compiled programs and where its Pod view comes from.

    Results are frozen, so the pass result (and the fail result when the message is static)
    is built once here and shared by every evaluation: most results are passes, and building
    a result per check per object was the largest cost of ``evaluate``.
    """

    __slots__ = (
        "failed",
        "function",
        "message_program",
        "needs_inventory",
        "passed",
        "policy",
        "program",
        "repeated",
        "rolled_up",
        "rule",
        "scoped",
        "template_path",
    )

    def __init__(
        self,
        policy: baselines.Policy,
        rule: baselines.Rule,
        program: cel.Program,
        message_program: cel.Program | None,
        template_path: tuple[str, ...] | None,
    ) -> None:
        self.policy = policy
        self.rule = rule
        self.program = program
        self.function = program.function
        self.message_program = message_program
        self.template_path = template_path  # None: the rule reads the object itself
        match = rule.check.match
        self.scoped = bool(
            match.namespaces
            or match.excluded_namespaces
            or match.object_selector
            or match.namespace_selector
        )
        self.needs_inventory = bool(rule.check.needs)
        self.passed = _result(self, common.Result.PASS, "")
        self.failed = _result(self, common.Result.FAIL, rule.message)
        self.rolled_up = _result(self, common.Result.SKIP, ROLLED_UP)
        # Another rule of the same plan runs the same program on the same activation (one
        # control in several baselines): the first run's verdict is kept in the memo.
        self.repeated = False


@dataclasses.dataclass(frozen=True)
class _KindPlan:
    """What runs for one (API group, kind): its rules, projection and pod-template path."""

    rules: tuple[_Bound, ...]
    trie: projection.Trie | None
    template_path: tuple[str, ...] | None
    needs: frozenset[str] = frozenset()  # the inventory views its cross-object rules read
    # What the rules that read the object itself read; ``{}`` when none reads anything.
    object_trie: projection.Trie | None = dataclasses.field(default_factory=dict)
    project: projection.Projector = dataclasses.field(init=False, repr=False, compare=False)
    # The projection for an object that a workload controls: its pod-template checks are
    # rolled up, so only what the object's own rules read matters (nothing, for a Pod).
    project_controlled: projection.Projector = dataclasses.field(
        init=False, repr=False, compare=False
    )
    # The rules that read the object itself, and the checks of those that read its pod
    # template: an object that a workload controls runs only the former (``Engine.triage``).
    object_rules: tuple[_Bound, ...] = dataclasses.field(init=False, repr=False, compare=False)
    template_checks: frozenset[tuple[str, str]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Every event of the kind is projected: compile the trie once, with the plan.
        object.__setattr__(
            self, "project", projection.compile(self.trie) if self.rules else _nothing
        )
        object.__setattr__(
            self,
            "project_controlled",
            projection.compile(self.object_trie) if self.object_trie != {} else _nothing,
        )
        object.__setattr__(
            self, "object_rules", tuple(b for b in self.rules if b.template_path is None)
        )
        object.__setattr__(
            self,
            "template_checks",
            frozenset(b.passed.ident for b in self.rules if b.template_path is not None),
        )


class Triage(NamedTuple):
    """What the stream processor keeps of one evaluation (``Engine.triage``).

    ``passed``: the checks that pass, in rule order. ``notable``: the results that tracking
    must see, in rule order: every failure and error, and any result of a watched check.
    """

    passed: tuple[tuple[str, str], ...]
    notable: list[CheckResult]


_NOTHING = Triage((), [])
_PASS = common.Result.PASS
_MEMO = cel.MEMO
_UNKNOWN = object()  # no verdict yet (a verdict may be None)
_FAIL = common.Result.FAIL
_ERROR = common.Result.ERROR


def _nothing(value: Any) -> None:
    # The projection of an object that no rule reads: its content cannot change a verdict.
    return None


_NO_PLAN = _KindPlan(rules=(), trie={}, template_path=None)
_PLANS_SEEN = 4096  # (apiVersion, kind) pairs come from the stream: bound their cache


class Engine:
    """Evaluates objects against a fixed set of resolved baselines (``baselines.Policy``).

    Rules that declare ``needs`` (cross-object checks reading ``inventory``) run only when
    ``evaluate`` is given an inventory; without one they produce no result.
    """

    def __init__(self, policies: Iterable[baselines.Policy]) -> None:
        self.policies = tuple(policies)
        self._programs: dict[str, cel.Program] = {}
        self._plans: dict[tuple[str, str], _KindPlan] = {}
        self._plans_seen: dict[tuple[str, str], _KindPlan] = {}  # by (apiVersion, kind)
        self._rules = [
            (policy, rule, self._compile(rule.validation), self._compile_optional(rule))
            for policy in self.policies
            for rule in policy.rules
        ]
        # The inventory views (``needs``) the caller must maintain for cross-object checks.
        self.inventory_views = frozenset(
            need for policy in self.policies for rule in policy.rules for need in rule.check.needs
        )
        # Everything a result carries comes from the rules, so their repr identifies the set.
        self.fingerprint = projection.digest([[p.ref, repr(p.rules)] for p in self.policies])
        self._digest = projection.digester(salt=self.fingerprint)

    @classmethod
    def from_refs(cls, refs: Iterable[str]) -> Engine:
        """An engine for built-in baseline references such as ``pss-restricted@v1.25``."""
        return cls(loading.policy(ref) for ref in refs)

    def _compile(self, source: str) -> cel.Program:
        # Many versions of a check share one expression: compile each distinct source once.
        program = self._programs.get(source)
        if program is None:
            program = self._programs[source] = cel.compile(
                source, variables=baselines.CEL_VARIABLES
            )
        return program

    def _compile_optional(self, rule: baselines.Rule) -> cel.Program | None:
        return self._compile(rule.message_expression) if rule.message_expression else None

    def _plan(self, api_version: str, kind: str) -> _KindPlan:
        # The rules and projection of one kind, computed on first sight and then cached (also
        # by apiVersion as written, which saves parsing out the group for every event).
        plan = self._plans_seen.get((api_version, kind))
        if plan is None:
            key = (workloads.group_of(api_version), kind)
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = self._make_plan(*key)
            if len(self._plans_seen) < _PLANS_SEEN:
                self._plans_seen[api_version, kind] = plan
        return plan

    def _plan_of(self, obj: Mapping[str, Any]) -> _KindPlan:
        api_version = obj.get("apiVersion", "")
        kind = obj.get("kind", "")
        if type(api_version) is not str:
            api_version = str(api_version)
        if type(kind) is not str:
            kind = str(kind)
        return self._plan(api_version, kind)

    def _make_plan(self, group: str, kind: str) -> _KindPlan:
        template_path = workloads.TEMPLATE_PATHS.get((group, kind))
        bound: list[_Bound] = []
        paths: set[tuple[str, ...]] = set()
        object_paths: set[tuple[str, ...]] = set()  # those of the rules without a template
        for policy, rule, program, message_program in self._rules:
            match = rule.check.match
            if rule.check.target is baselines.Target.POD_SPEC:
                if template_path is None or (match.kinds and kind not in match.kinds):
                    continue
                rule_template: tuple[str, ...] | None = template_path
            else:
                if not _kind_matches(match, group, kind):
                    continue
                rule_template = None
            bound.append(_Bound(policy, rule, program, message_program, rule_template))
            for program_ in (program, message_program):
                if program_ is not None:
                    read = {
                        workloads.real_field_path(path, rule_template or ())
                        for path in program_.projection_paths
                    }
                    paths.update(read)
                    if rule_template is None:
                        object_paths.update(read)
        if not bound:
            return _NO_PLAN
        runs = collections.Counter((b.function, b.template_path is None) for b in bound)
        for b in bound:
            b.repeated = runs[b.function, b.template_path is None] > 1
        needs = frozenset(need for b in bound for need in b.rule.check.needs)
        return _KindPlan(
            tuple(bound),
            projection.build(paths),
            template_path,
            needs,
            object_trie=projection.build(object_paths),
        )

    def needs(self, api_version: str, kind: str) -> frozenset[str]:
        """The inventory views that checks of this kind read (empty for most kinds).

        The stream processor asks this before evaluating, so it assembles an inventory only for
        the few kinds with cross-object checks (Namespaces) and keeps the common path cheap.
        """
        return self._plan(api_version, kind).needs

    def project(self, obj: Mapping[str, Any]) -> Any:
        """``obj`` reduced to the fields its checks read."""
        return self._plan_of(obj).project(obj)

    def digest(self, obj: Mapping[str, Any]) -> str:
        """A content digest of what the checks read; unchanged digest, unchanged results.

        It covers the projected fields, the labels and namespace (which ``match`` reads), and
        the policy set's fingerprint, so a new baseline version changes every digest.
        """
        return self.digest_and_projection(obj)[0]

    def digest_and_projection(self, obj: Mapping[str, Any]) -> tuple[str, Any]:
        """``digest(obj)`` and ``project(obj)`` at once; pass the latter to ``evaluate``.

        The stream processor needs the digest of every event and evaluates only when it
        changed: handing the projection over saves projecting the object twice.
        """
        metadata = obj.get("metadata") or {}
        scope = [metadata.get("namespace"), metadata.get("labels")]
        plan = self._plan_of(obj)
        if plan.template_path is not None and workloads.controlled_by_workload(obj):
            # Being adopted or orphaned turns the pod checks off or on, so it is in the digest.
            # While they are off, only what the other rules read can change a verdict: a
            # ReplicaSet's Pods are most objects and most events, and they digest cheaply.
            scope.append(True)
            projected = plan.project_controlled(obj)
        else:
            projected = plan.project(obj)
        return self._digest([scope, projected]), projected

    def evaluate(
        self,
        obj: Mapping[str, Any],
        *,
        namespace_obj: Mapping[str, Any] | None = None,
        inventory: Mapping[str, Any] | None = None,
        projected: Any = None,
    ) -> list[CheckResult]:
        """Run every check that applies to ``obj``'s kind; one result per check.

        ``podSpec`` checks skip an object that a workload controls (``ROLLED_UP``): a Pod of
        a ReplicaSet, a ReplicaSet of a Deployment or a Job of a CronJob runs its controller's
        template, so its findings are reported once, on the top-level controller. Bare Pods
        and workloads keep them. ``projected`` is the projection of ``obj`` when the caller has
        it (from ``project`` or ``digest_and_projection``).
        """
        plan = self._plan_of(obj)
        if not plan.rules:
            return []
        controlled = plan.template_path is not None and workloads.controlled_by_workload(obj)
        return self._run(
            plan,
            plan.rules,
            obj,
            projected=projected,
            namespace_obj=namespace_obj,
            inventory=inventory,
            controlled=controlled,
        )

    def triage(
        self,
        obj: Mapping[str, Any],
        *,
        projected: Any = None,
        namespace_obj: Mapping[str, Any] | None = None,
        inventory: Mapping[str, Any] | None = None,
        watched: Collection[tuple[str, str]] = (),
    ) -> Triage:
        """``evaluate``, reduced to what a tracker of findings needs (``Triage``).

        ``watched`` are the checks whose every result matters (the object's open findings).
        Results are the same as ``evaluate``'s; the saving is for an object that a workload
        controls (a ReplicaSet's Pod, most Pods of a cluster): every pod-template check of it
        is skipped as rolled up, so unless one of those is watched they are not run at all.
        """
        plan = self._plan_of(obj)
        if not plan.rules:
            return _NOTHING
        controlled = plan.template_path is not None and workloads.controlled_by_workload(obj)
        rules = plan.rules
        if controlled and not (watched and plan.template_checks.intersection(watched)):
            rules = plan.object_rules
        results = self._run(
            plan,
            rules,
            obj,
            projected=projected,
            namespace_obj=namespace_obj,
            inventory=inventory,
            controlled=controlled,
        )
        passed = tuple([r.ident for r in results if r.result is _PASS])
        if watched:
            notable = [
                r for r in results if r.result is _FAIL or r.result is _ERROR or r.ident in watched
            ]
        else:
            notable = [r for r in results if r.result is _FAIL or r.result is _ERROR]
        return Triage(passed, notable)

    def _run(
        self,
        plan: _KindPlan,
        rules: tuple[_Bound, ...],
        obj: Mapping[str, Any],
        *,
        projected: Any,
        namespace_obj: Mapping[str, Any] | None,
        inventory: Mapping[str, Any] | None,
        controlled: bool,
    ) -> list[CheckResult]:
        # The loop of ``evaluate`` over ``rules`` (all of the plan's, or a part of them).
        if not rules:
            return []
        if projected is None:
            # Controlled: the template rules are rolled up, only the object's own rules read.
            projected = (plan.project_controlled if controlled else plan.project)(obj)
        view: Mapping[str, Any] | None = None
        if plan.template_path is not None and not controlled:
            view = workloads.pod_view(projected, plan.template_path)
        # Each activation carries a memo: the checks of one object share their subexpressions.
        object_activation: dict[str, Any] = {
            "object": projected,
            "namespaceObject": namespace_obj,
            _MEMO: {},
        }
        view_activation: dict[str, Any] = {
            "object": view,
            "namespaceObject": namespace_obj,
            _MEMO: {},
        }
        if inventory is not None:
            object_activation["inventory"] = view_activation["inventory"] = inventory
        results: list[CheckResult] = []
        append = results.append  # the loop below runs for every check of every event
        for bound in rules:
            if bound.needs_inventory and inventory is None:
                continue
            if bound.template_path is not None:
                if controlled:
                    append(bound.rolled_up)
                    continue
                if view is None:
                    append(_result(bound, common.Result.SKIP, "the object has no pod template"))
                    continue
                activation = view_activation
            else:
                activation = object_activation
            if bound.scoped:
                reason = _out_of_scope(bound.rule.check.match, obj, namespace_obj)
                if reason is not None:
                    status = common.Result.ERROR if reason.startswith("!") else common.Result.SKIP
                    append(_result(bound, status, reason.lstrip("!")))
                    continue
            # Fast path: call the generated function directly; nearly every check returns a
            # bool. Anything else goes through ``_settle``.
            memo = activation[_MEMO] if bound.repeated else None
            verdict: object = _UNKNOWN if memo is None else memo.get(bound.function, _UNKNOWN)
            if verdict is _UNKNOWN:
                try:
                    verdict = bound.function(activation)
                except Exception:  # noqa: BLE001 - ``_settle`` re-runs it and reports the error
                    verdict = None
                if memo is not None:
                    memo[bound.function] = verdict
            if verdict is True:
                append(bound.passed)
            elif verdict is False and bound.message_program is None:
                append(bound.failed)
            else:
                append(_settle(bound, activation))
        return results


def _settle(bound: _Bound, activation: Mapping[str, Any]) -> CheckResult:
    # The slow path, after the generated function did not simply return a bool (or returned
    # False for a check with a message expression). It is re-run through ``Program.evaluate``,
    # which turns errors and non-bools into the public conventions; evaluation is
    # deterministic, so this is exact.
    try:
        verdict = bound.program.evaluate(activation)
    except cel.CelEvalError as exc:
        return _result(bound, common.Result.ERROR, f"validation could not be evaluated: {exc}")
    if not isinstance(verdict, bool):
        return _result(bound, common.Result.ERROR, f"validation returned {verdict!r}, not a bool")
    if verdict:
        return bound.passed
    if bound.message_program is None:
        return bound.failed
    # As in ValidatingAdmissionPolicy: a failing messageExpression falls back to message.
    try:
        rendered = bound.message_program.evaluate(activation)
    except cel.CelEvalError:
        return bound.failed
    if isinstance(rendered, str) and rendered.strip():
        return dataclasses.replace(bound.failed, message=rendered)
    return bound.failed


def _result(bound: _Bound, status: common.Result, message: str) -> CheckResult:
    check = bound.rule.check
    path = check.path if status is common.Result.FAIL else ""
    if bound.template_path:
        path = workloads.real_path(path, bound.template_path)
    return CheckResult(
        baseline=bound.policy.baseline,
        baseline_version=bound.policy.version,
        check_id=check.id,
        result=status,
        severity=check.severity,
        controls=check.controls,
        message=message,
        path=path,
        title=check.title,
        fix=check.fix,
    )


def _kind_matches(match: baselines.Match, group: str, kind: str) -> bool:
    groups_ok = not match.api_groups or "*" in match.api_groups or group in match.api_groups
    kinds_ok = not match.kinds or "*" in match.kinds or kind in match.kinds
    # An object check without kinds would run on everything; require them to be explicit.
    return groups_ok and kinds_ok and bool(match.kinds)


def _out_of_scope(
    match: baselines.Match, obj: Mapping[str, Any], namespace_obj: Mapping[str, Any] | None
) -> str | None:
    """Why the check does not apply (``None`` if it does); a leading ``!`` marks an error."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    if match.namespaces and namespace not in match.namespaces:
        return f"namespace {namespace!r} is not in the check's namespaces"
    if namespace and namespace in match.excluded_namespaces:
        return f"namespace {namespace!r} is excluded"
    if match.object_selector is not None and not match.object_selector.matches(
        metadata.get("labels") or {}
    ):
        return "the object's labels do not match the check's objectSelector"
    if match.namespace_selector is not None and namespace:
        if namespace_obj is None:
            return "!the check has a namespaceSelector but the namespace object is unknown"
        labels = (namespace_obj.get("metadata") or {}).get("labels") or {}
        if not match.namespace_selector.matches(labels):
            return "the namespace's labels do not match the check's namespaceSelector"
    return None
