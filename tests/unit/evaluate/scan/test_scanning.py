"""Scanning manifests: parsing with lines, evaluating objects together, the report and gate."""

from __future__ import annotations

import pytest

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import loading
from kposture.evaluate.scan import scanning
from kposture.schemas import common

PRIVILEGED_DEPLOYMENT = """\
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps}
spec:
  template:
    spec:
      containers:
        - name: app
          image: nginx
          securityContext:
            privileged: true
"""

DEFAULT_DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: apps}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"""

NAMESPACE_LABEL_BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: owned
version: v1.0
description: every pod's namespace names a team
checks:
  - id: namespaceTeam
    title: The namespace names a team
    severity: high
    controls: ["demo:team"]
    target: podSpec
    message: the namespace has no team label
    validation: |-
      namespaceObject != null && has(namespaceObject.metadata.labels)
      && "team" in namespaceObject.metadata.labels
"""


def _scan(text: str, *refs: str, filename: str = "m.yaml") -> scanning.ScanReport:
    parsed = scanning.parse_manifests(text, filename=filename)
    evaluator = evaluating.Engine.from_refs(refs or scanning.DEFAULT_BASELINES)
    return scanning.scan(parsed.manifests, evaluator=evaluator)


def test_multi_document_yaml_keeps_each_objects_start_line() -> None:
    """Each document of a multi-document file is one manifest, located at its first line."""
    parsed = scanning.parse_manifests(PRIVILEGED_DEPLOYMENT, filename="app.yaml")
    assert [(m.object["kind"], m.line, m.file) for m in parsed.manifests] == [
        ("Namespace", 1, "app.yaml"),
        ("Deployment", 5, "app.yaml"),
    ]


def test_a_list_is_expanded_into_its_items_with_their_lines() -> None:
    """`kind: List` yields its items, each located where it starts."""
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: b}\n"
    )
    parsed = scanning.parse_manifests(text, filename="list.yaml")
    assert [(m.ref["name"], m.line) for m in parsed.manifests] == [("a", 4), ("b", 5)]
    assert parsed.manifests[1].line_of("metadata.name") == 7


def test_a_json_file_is_parsed_as_json() -> None:
    """A `.json` manifest is one object."""
    parsed = scanning.parse_manifests(
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}',
        filename="pod.json",
    )
    assert [m.ref for m in parsed.manifests] == [
        {"apiVersion": "v1", "kind": "Pod", "namespace": None, "name": "p"}
    ]


@pytest.mark.parametrize(
    ("filename", "text", "line"),
    [
        ("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n", 5),
        ("bad.json", '{\n  "kind": "Pod",\n  oops\n}', 3),
        ("bad.yaml", "apiVersion: v1\n---\n- a list\n", 3),
    ],
)
def test_invalid_input_names_the_file_and_the_line(filename: str, text: str, line: int) -> None:
    """Invalid YAML, invalid JSON and a non-mapping document are errors with file and line."""
    with pytest.raises(scanning.ManifestError) as caught:
        scanning.parse_manifests(text, filename=filename)
    assert (caught.value.file, caught.value.line) == (filename, line)
    assert str(caught.value).startswith(f"{filename}:{line}: ")


def test_documents_that_are_not_kubernetes_objects_are_ignored_with_a_note() -> None:
    """A mapping without apiVersion and kind (Helm values, say) is listed, not evaluated."""
    parsed = scanning.parse_manifests("replicas: 3\n---\n", filename="values.yaml")
    assert parsed.manifests == ()
    assert parsed.ignored == ("values.yaml:1: not a Kubernetes object (no apiVersion or kind)",)


def test_results_have_the_documented_json_shape() -> None:
    """Every result carries exactly the documented fields, and the summary counts them."""
    report = _scan(PRIVILEGED_DEPLOYMENT, "pss-restricted")
    document = report.as_json()
    assert set(document) == {"results", "summary"}
    privileged = next(r for r in document["results"] if r["check"] == "privileged")
    assert privileged == {
        "file": "m.yaml",
        "object": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": "apps",
            "name": "web",
        },
        "baseline": "pss-restricted",
        "baseline_version": "v1.37",
        "check": "privileged",
        "controls": ["pss:baseline/privileged"],
        "result": "fail",
        "severity": "critical",
        "message": "privileged (containers must not set securityContext.privileged=true)",
        "path": "spec.template.spec.containers[*].securityContext.privileged",
    }
    summary = document["summary"]
    assert set(summary) == {"pass", "fail", "error", "skip"}
    assert sum(summary.values()) == len(document["results"])
    assert summary["fail"] == sum(r["result"] == "fail" for r in document["results"])


def test_a_result_is_located_at_the_deepest_known_field_of_its_path() -> None:
    """The privileged finding points at the containers list, the closest line to the field."""
    report = _scan(PRIVILEGED_DEPLOYMENT, "pss-restricted")
    privileged = next(r for r in report.results if r.check.check_id == "privileged")
    assert privileged.line == 12


def test_cross_object_checks_see_the_scanned_network_policies() -> None:
    """A namespace fails the network-policy checks alone and passes with its default deny."""

    def verdicts(text: str) -> dict[str, common.Result]:
        report = _scan(text, "cis-1.12", "nsa-cisa-1.2")
        return {
            r.check.check_id: r.check.result
            for r in report.results
            if r.check.check_id in ("namespaceNetworkPolicy", "defaultDenyNetworkPolicy")
        }

    alone = verdicts(PRIVILEGED_DEPLOYMENT)
    assert alone == {
        "namespaceNetworkPolicy": common.Result.FAIL,
        "defaultDenyNetworkPolicy": common.Result.FAIL,
    }
    together = verdicts(PRIVILEGED_DEPLOYMENT + "---\n" + DEFAULT_DENY)
    assert together == {
        "namespaceNetworkPolicy": common.Result.PASS,
        "defaultDenyNetworkPolicy": common.Result.PASS,
    }


SECRET_READER_APP = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      serviceAccountName: app
      containers: [{name: web, image: web:1.0}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reads, namespace: shop}
subjects: [{kind: ServiceAccount, name: app, namespace: shop}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
"""


def test_a_service_account_is_judged_by_the_scanned_rbac_and_workloads() -> None:
    """Secret access through a binding matters only while pods run as the account."""

    def verdict(rules: str) -> common.Result:
        role = (
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n"
            f"metadata: {{name: reader, namespace: shop}}\nrules: {rules}\n"
        )
        report = _scan(SECRET_READER_APP + role, "cis-1.12")
        (result,) = [r for r in report.results if r.check.check_id == "secretReadersInUse"]
        assert result.manifest.object["kind"] == "ServiceAccount"
        return result.check.result

    assert verdict('[{apiGroups: [""], resources: [secrets], verbs: [list]}]') is common.Result.FAIL
    assert verdict('[{apiGroups: [""], resources: [configmaps], verbs: [list]}]') is (
        common.Result.PASS
    )
    # Without the Deployment no pod runs as the account.
    no_pods = SECRET_READER_APP.replace("kind: Deployment", "kind: ConfigMap")
    role = (
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n"
        'metadata: {name: reader, namespace: shop}\nrules: [{apiGroups: [""], '
        "resources: [secrets], verbs: [get]}]\n"
    )
    report = _scan(no_pods + role, "cis-1.12")
    (result,) = [r for r in report.results if r.check.check_id == "secretReadersInUse"]
    assert result.check.result is common.Result.PASS


def test_a_scanned_namespace_is_the_namespace_object_of_the_objects_in_it() -> None:
    """A check reading `namespaceObject` sees the Namespace found among the scanned files."""
    custom = loading.load_documents(NAMESPACE_LABEL_BASELINE).baselines[0]
    evaluator = evaluating.Engine([custom.at()])
    labelled = PRIVILEGED_DEPLOYMENT.replace(
        "metadata: {name: apps}", "metadata: {name: apps, labels: {team: web}}"
    )

    def verdict(text: str) -> common.Result:
        parsed = scanning.parse_manifests(text, filename="m.yaml")
        report = scanning.scan(parsed.manifests, evaluator=evaluator)
        (result,) = report.results
        return result.check.result

    assert verdict(PRIVILEGED_DEPLOYMENT) is common.Result.FAIL
    assert verdict(labelled) is common.Result.PASS


def test_the_gate_counts_failures_and_errors_at_or_above_the_threshold() -> None:
    """`blocking` keeps failing checks at or above the severity, never passes or lower ones."""
    report = _scan(PRIVILEGED_DEPLOYMENT, "pss-restricted")
    critical = report.blocking(common.Severity.CRITICAL)
    assert {r.check.check_id for r in critical} == {"privileged"}
    low = report.blocking(common.Severity.LOW)
    assert len(low) == report.summary()["fail"]
    compliant = _scan("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert compliant.blocking(common.Severity.INFO) == []


def test_inventory_views_are_named_after_the_plural_kind() -> None:
    """Views follow the built-ins' naming, and a view nothing belongs to is empty."""
    assert scanning.view_name("NetworkPolicy") == "networkPolicies"
    assert scanning.view_name("Ingress") == "ingresses"
    assert scanning.view_name("ServiceAccount") == "serviceAccounts"
    inventory = scanning.build_inventory(
        [{"kind": "NetworkPolicy"}, {"kind": "Pod"}], views=["networkPolicies", "roleBindings"]
    )
    assert inventory == {"networkPolicies": [{"kind": "NetworkPolicy"}], "roleBindings": []}
