"""Exporting baselines as ValidatingAdmissionPolicies: shape, rewriting, and same verdicts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import cel, loading
from kposture.evaluate.scan import exporting
from kposture.schemas import common

CORPUS = (
    Path(__file__).resolve().parents[4].parent
    / "shared"
    / "corpora"
    / "pod-security-admission"
    / "testdata"
)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _export(*refs: str, **options: Any) -> exporting.Export:
    return exporting.export_vap([loading.policy(ref) for ref in refs], **options)


def test_pod_checks_become_one_policy_for_pods_and_every_workload() -> None:
    """pss-restricted is one policy, matching Pods and the workload kinds, plus its binding."""
    policy, binding = _export("pss-restricted").objects
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    resources = {
        (group, r) for rule in rules for group in rule["apiGroups"] for r in rule["resources"]
    }
    assert resources == {
        ("", "pods"), ("", "podtemplates"), ("", "replicationcontrollers"),
        ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
        ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs"),
    }  # fmt: skip
    assert [v["name"] for v in policy["spec"]["variables"]] == ["pod"]
    assert len(policy["spec"]["validations"]) == len(loading.policy("pss-restricted").rules)
    for validation in policy["spec"]["validations"]:
        assert "variables.pod" in validation["expression"]
        assert "\n" not in validation["message"]
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_cross_object_checks_are_left_out_with_the_reason() -> None:
    """Checks that need the inventory cannot run at admission and are reported as skipped."""
    export = _export("cis-1.12", "nsa-cisa-1.2")
    assert [check for check, _ in export.skipped] == [
        "cis-1.12/secretReadersInUse",
        "cis-1.12/namespaceNetworkPolicy",
        "nsa-cisa-1.2/defaultDenyNetworkPolicy",
    ]
    exported = {
        check
        for obj in export.objects
        if obj["kind"] == "ValidatingAdmissionPolicy"
        for check in obj["metadata"]["annotations"]["kposture.io/checks"].split(",")
    }
    assert "namespaceNetworkPolicy" not in exported
    assert {"clusterAdminBinding", "privilegedContainers", "podSecurityAdmission"} <= exported


def test_object_checks_are_grouped_by_what_they_match() -> None:
    """RBAC checks on the same kinds share a policy whose rules name those resources."""
    export = _export("cis-1.12")
    policies = {o["metadata"]["name"]: o for o in export.objects if o["kind"].endswith("Policy")}
    roles = policies["kposture-cis-1.12-clusterrole-role"]
    (rule,) = roles["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["rbac.authorization.k8s.io"]
    assert rule["resources"] == ["clusterroles", "roles"]
    assert "variables" not in roles["spec"]


def test_names_are_valid_and_unique_and_bindings_follow_options() -> None:
    """Every name is a DNS subdomain, unique per kind; bindings take the action and selector."""
    export = _export(
        *loading.builtin_names(),
        action=exporting.Action.WARN,
        namespace_selector={"matchLabels": {"env": "test"}},
    )
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        names = [o["metadata"]["name"] for o in export.objects if o["kind"] == kind]
        assert len(names) == len(set(names))
        assert all(DNS_SUBDOMAIN.match(name) for name in names)
    for binding in (o for o in export.objects if o["kind"].endswith("Binding")):
        assert binding["spec"]["validationActions"] == ["Warn"]
        assert binding["spec"]["matchResources"] == {
            "namespaceSelector": {"matchLabels": {"env": "test"}}
        }


def test_the_rewrite_renames_only_the_object_variable() -> None:
    """Strings, fields named `object` and the object's namespace are left as written."""
    source = (
        'object.spec.x == "object" && a.object && has(object.metadata.namespace)'
        " && object.metadata.labels.size() > 0"
    )
    assert exporting.to_pod_view(source) == (
        'variables.pod.spec.x == "object" && a.object && has(object.metadata.namespace)'
        " && variables.pod.metadata.labels.size() > 0"
    )


def test_yaml_output_round_trips() -> None:
    """The multi-document YAML parses back to exactly the exported objects."""
    export = _export("pss-baseline", "cis-1.12")
    assert list(yaml.safe_load_all(exporting.to_yaml(export.objects))) == list(export.objects)


def _wrappings(pod: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    template = {"metadata": pod.get("metadata", {}), "spec": pod["spec"]}
    meta = {"name": "w", "namespace": "apps"}
    yield "Pod", {**pod, "metadata": {**pod.get("metadata", {}), "namespace": "apps"}}
    yield (
        "PodTemplate",
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta, "template": template},
    )
    for api_version, kind in (("apps/v1", "Deployment"), ("batch/v1", "Job")):
        yield (
            kind,
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": meta,
                "spec": {"template": template},
            },
        )
    yield (
        "CronJob",
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        },
    )


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_exported_expressions_agree_with_the_engine_on_the_psa_corpus(level: str) -> None:
    """Evaluated through `variables.pod`, every exported check gives the engine's verdict."""
    fixtures = sorted((CORPUS / level / "v1.37").glob("*/*.yaml"))
    if not fixtures:
        pytest.fail(f"the PSA corpus is missing under {CORPUS}")
    policy = loading.policy(f"pss-{level}")
    evaluator = evaluating.Engine([policy])
    (vap, _) = exporting.export_vap([policy]).objects
    view = cel.compile(vap["spec"]["variables"][0]["expression"])
    checks = vap["metadata"]["annotations"]["kposture.io/checks"].split(",")
    programs = dict(
        zip(checks, (cel.compile(v["expression"]) for v in vap["spec"]["validations"]), strict=True)
    )
    disagreements: list[str] = []
    failures = 0
    for path in fixtures:
        for kind, obj in _wrappings(yaml.safe_load(path.read_text())):
            pod = view.evaluate({"object": obj})
            activation = {"object": obj, "namespaceObject": None, "variables": {"pod": pod}}
            for result in evaluator.evaluate(obj):
                verdict = programs[result.check_id].evaluate(activation)
                failures += verdict is False
                if verdict != (result.result is common.Result.PASS):
                    disagreements.append(
                        f"{path.parent.name}/{path.name} as {kind}: {result.check_id}"
                    )
    assert not disagreements, "\n".join(disagreements)
    assert failures >= len(fixtures) // 2  # the fail fixtures did fail, in every wrapping
