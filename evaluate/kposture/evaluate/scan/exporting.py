"""Exporting baselines as ValidatingAdmissionPolicy objects, so admission enforces the same CEL.

A check's validation is already VAP-style CEL over ``object`` and ``namespaceObject``, so
the single-object checks translate directly; cross-object checks (``needs``) read an
inventory that admission does not have and are left out, with the reason.

Checks written against a Pod (``target: podSpec``) become one policy matching Pods and every
workload kind. Its ``variables.pod`` is the same Pod-shaped view the engine builds
(``workloads.pod_view``): the object itself for a Pod, the pod template (with
``apiVersion: v1`` and ``kind: Pod``) for the controllers. Each expression reads the view by
renaming its ``object`` identifier to ``variables.pod``, except ``object.metadata.namespace``,
which stays on the real object because templates carry no namespace. The rename works on
CEL tokens, so string literals and fields named ``object`` are left alone.

A check's ``match`` becomes the policy's ``matchConstraints``: kinds and groups become
resource rules, ``namespaces``/``excludedNamespaces`` a namespace selector on the
``kubernetes.io/metadata.name`` label. One difference remains: admission applies namespace
selectors only to namespaced objects, where the engine skips cluster-scoped ones.

Each policy gets a binding with the chosen validation action; an optional namespace selector
on the binding rolls enforcement out namespace by namespace.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kposture.evaluate.engine import workloads
from kposture.evaluate.policy import baselines
from kposture.evaluate.policy.cel import lexer
from kposture.evaluate.scan import scanning

API_VERSION = "admissionregistration.k8s.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kposture"}
POD_VARIABLE = "pod"
_OPERATIONS = ["CREATE", "UPDATE"]


class Action(enum.StrEnum):
    """What a binding does with a failing validation (``validationActions``)."""

    DENY = "Deny"  # reject the request
    WARN = "Warn"  # admit it, with a warning to the client
    AUDIT = "Audit"  # admit it, and record the failure in the audit log


@dataclasses.dataclass(frozen=True)
class Export:
    """The admission objects for some policies, and the checks admission cannot express."""

    objects: tuple[dict[str, Any], ...]
    skipped: tuple[tuple[str, str], ...]  # (``baseline/check``, why)


def export_vap(
    policies: Sequence[baselines.Policy],
    *,
    action: Action = Action.DENY,
    namespace_selector: Mapping[str, Any] | None = None,
) -> Export:
    """ValidatingAdmissionPolicies and their bindings for ``policies`` (resolved baselines)."""
    objects: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    names: set[str] = set()
    for policy in policies:
        # One policy per distinct (target, match): matchConstraints belong to a policy, not to
        # a validation. A Match holds dicts (selectors), so its repr is the grouping key.
        groups: dict[str, list[baselines.Rule]] = {}
        for rule in policy.rules:
            reason = _unexpressible(rule)
            if reason is not None:
                skipped.append((f"{policy.baseline}/{rule.id}", reason))
                continue
            groups.setdefault(repr((rule.check.target, rule.check.match)), []).append(rule)
        for rules in groups.values():
            target, match = rules[0].check.target, rules[0].check.match
            name = _unique(_policy_name(policy, target, match), names)
            objects.append(_policy(name, policy, target, match, rules))
            objects.append(_binding(name, policy, action, namespace_selector))
    return Export(tuple(objects), tuple(skipped))


def _unexpressible(rule: baselines.Rule) -> str | None:
    if rule.check.needs:
        return "cross-object check: admission sees one object, not the inventory"
    kinds = rule.check.match.kinds
    pod_kinds = [kind for _, kind in workloads.TEMPLATE_PATHS]
    if rule.check.target is baselines.Target.POD_SPEC and kinds and not set(kinds) & set(pod_kinds):
        return "its kinds hold no pod template"
    sources = [rule.validation, rule.message_expression or ""]
    if any(_reads(source, "inventory") for source in sources):
        return "reads the inventory, which admission does not have"
    return None


def _reads(source: str, identifier: str) -> bool:
    tokens = lexer.tokenize(source)
    return any(
        token.kind == "ident"
        and token.value == identifier
        and not (index and tokens[index - 1].value == ".")
        for index, token in enumerate(tokens)
    )


def _policy_name(policy: baselines.Policy, target: baselines.Target, match: baselines.Match) -> str:
    if target is baselines.Target.POD_SPEC:
        suffix = "pods"
    else:
        suffix = "-".join(sorted({kind.lower().replace("*", "all") for kind in match.kinds}))
    return _dns_name(f"kposture-{policy.baseline}-{suffix}")


def _dns_name(text: str) -> str:
    # A DNS subdomain: lowercase alphanumerics, '-' and '.', at most 253 characters.
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return cleaned[:253].rstrip("-.")


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name[:248]}-{index}", index + 1
    taken.add(candidate)
    return candidate


def _metadata(name: str, policy: baselines.Policy, **extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": dict(MANAGED_BY),
        "annotations": {"kposture.io/baseline": policy.ref, **extra},
    }


def _policy(
    name: str,
    policy: baselines.Policy,
    target: baselines.Target,
    match: baselines.Match,
    rules: Sequence[baselines.Rule],
) -> dict[str, Any]:
    is_pod = target is baselines.Target.POD_SPEC
    spec: dict[str, Any] = {
        # An expression that errors (a malformed object) rejects rather than admits.
        "failurePolicy": "Fail",
        "matchConstraints": _constraints(match, pod=is_pod),
    }
    if is_pod:
        spec["variables"] = [{"name": POD_VARIABLE, "expression": pod_view_expression(match)}]
    spec["validations"] = [_validation(rule, pod=is_pod) for rule in rules]
    checks = ",".join(rule.id for rule in rules)
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _metadata(name, policy, **{"kposture.io/checks": checks}),
        "spec": spec,
    }


def _validation(rule: baselines.Rule, *, pod: bool) -> dict[str, Any]:
    rewrite = to_pod_view if pod else _same
    # VAP rejects messages with line breaks; the check id tells the user what to look up.
    message = " ".join(f"{rule.id}: {rule.message}".split())
    validation: dict[str, Any] = {
        "expression": rewrite(rule.validation),
        "message": message,
        "reason": "Forbidden",
    }
    if rule.message_expression:
        validation["messageExpression"] = rewrite(rule.message_expression)
    return validation


def _same(source: str) -> str:
    return source


def to_pod_view(source: str) -> str:
    """Rewrite a ``podSpec`` check's CEL to read ``variables.pod`` instead of ``object``."""
    tokens = lexer.tokenize(source)
    out: list[str] = []
    cursor = 0
    for index, token in enumerate(tokens):
        if token.kind != "ident" or token.value != "object":
            continue
        if index and tokens[index - 1].value == ".":
            continue  # a field named "object", not the variable
        following = [t.value for t in tokens[index + 1 : index + 5]]
        if following == [".", "metadata", ".", "namespace"]:
            continue  # templates have no namespace: the view takes the object's
        out.append(source[cursor : token.pos])
        out.append(f"variables.{POD_VARIABLE}")
        cursor = token.pos + len("object")
    out.append(source[cursor:])
    return "".join(out)


def pod_view_expression(match: baselines.Match) -> str:
    """The CEL of ``variables.pod``: the Pod that a ``podSpec`` check reads, per kind."""
    by_path: dict[tuple[str, ...], list[str]] = {}
    for (_, kind), path in workloads.TEMPLATE_PATHS.items():
        if not match.kinds or kind in match.kinds:
            by_path.setdefault(path, []).append(kind)
    # Pods first: the view is the object itself. The last branch needs no condition, since
    # matchConstraints admit only these kinds (and CEL's conditional needs an else).
    ordered = sorted(by_path.items(), key=lambda item: (bool(item[0]), len(item[0])))
    expression = ""
    for position, (path, kinds) in enumerate(reversed(ordered)):
        view = "object" if not path else _template_view("object." + ".".join(path))
        if position == 0:
            expression = view
            continue
        condition = " || ".join(f'object.kind == "{kind}"' for kind in kinds)
        expression = f"({condition}) ? {view}\n  : {expression}"
    return expression


def _template_view(template: str) -> str:
    # Kubernetes type-checks map literals as homogeneous: dyn() keeps the constants from
    # fixing the value type to string while metadata and spec are objects.
    return (
        '{"apiVersion": dyn("v1"), "kind": dyn("Pod"), '
        f'"metadata": has({template}.metadata) ? {template}.metadata : {{}}, '
        f'"spec": has({template}.spec) ? {template}.spec : {{}}}}'
    )


def _constraints(match: baselines.Match, *, pod: bool) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if pod:
        by_group: dict[str, list[str]] = {}
        for group, kind in workloads.TEMPLATE_PATHS:
            if not match.kinds or kind in match.kinds:
                by_group.setdefault(group, []).append(_resource(kind))
        rules.extend(_rule([group], resources) for group, resources in by_group.items())
    else:
        groups = list(match.api_groups) or ["*"]
        kinds = ["*"] if "*" in match.kinds else [_resource(kind) for kind in match.kinds]
        rules.append(_rule(groups, kinds))
    constraints: dict[str, Any] = {"resourceRules": rules}
    namespace_selector = _namespace_selector(match)
    if namespace_selector:
        constraints["namespaceSelector"] = namespace_selector
    if match.object_selector is not None:
        constraints["objectSelector"] = _selector(match.object_selector)
    return constraints


def _rule(groups: list[str], resources: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": groups,
        "apiVersions": ["*"],
        "operations": list(_OPERATIONS),
        "resources": resources,
    }


def _resource(kind: str) -> str:
    return scanning.plural(kind.lower())


def _namespace_selector(match: baselines.Match) -> dict[str, Any]:
    selector = _selector(match.namespace_selector) if match.namespace_selector else {}
    expressions = list(selector.get("matchExpressions", []))
    # The namespace's name is a label on every namespace since Kubernetes 1.21.
    key = "kubernetes.io/metadata.name"
    if match.namespaces:
        expressions.append({"key": key, "operator": "In", "values": list(match.namespaces)})
    if match.excluded_namespaces:
        expressions.append(
            {"key": key, "operator": "NotIn", "values": list(match.excluded_namespaces)}
        )
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def _selector(selector: baselines.LabelSelector) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if selector.match_labels:
        result["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        result["matchExpressions"] = [
            {"key": key, "operator": operator, **({"values": list(values)} if values else {})}
            for key, operator, values in selector.match_expressions
        ]
    return result


def _binding(
    name: str,
    policy: baselines.Policy,
    action: Action,
    namespace_selector: Mapping[str, Any] | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"policyName": name, "validationActions": [str(action)]}
    if namespace_selector:
        spec["matchResources"] = {"namespaceSelector": dict(namespace_selector)}
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": _metadata(name, policy),
        "spec": spec,
    }


def to_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, with multi-line CEL as literal blocks so it reads as written."""
    return yaml.dump_all([dict(obj) for obj in objects], Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """A SafeDumper that writes multi-line strings in the ``|`` block style."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)
