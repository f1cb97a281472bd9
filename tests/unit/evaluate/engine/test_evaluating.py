"""The engine: pod templates, paths, match, errors, projection and digests."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import loading
from kposture.schemas import common


def privileged_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "apps", "annotations": {"a": "b"}},
        "spec": {
            "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}]
        },
    }


def results_by_id(results: list[evaluating.CheckResult]) -> dict[str, evaluating.CheckResult]:
    return {result.check_id: result for result in results}


@pytest.fixture(scope="module")
def restricted() -> evaluating.Engine:
    return evaluating.Engine.from_refs(["pss-restricted"])


def test_a_failing_pod_check_reports_the_path_in_the_pod(restricted: evaluating.Engine) -> None:
    """On a Pod, the offending field is reported at its own path."""
    got = results_by_id(restricted.evaluate(privileged_pod()))["privileged"]
    assert got.result is common.Result.FAIL
    assert got.path == "spec.containers[*].securityContext.privileged"
    assert (got.baseline, got.baseline_version, got.severity) == (
        "pss-restricted",
        "v1.37",
        "critical",
    )


def test_a_cronjob_reports_paths_under_its_job_template(restricted: evaluating.Engine) -> None:
    """On a CronJob, the path is re-rooted under spec.jobTemplate.spec.template."""
    pod = privileged_pod()
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "cj", "namespace": "apps"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": pod["spec"]}}}},
    }
    got = results_by_id(restricted.evaluate(cronjob))["privileged"]
    assert got.result is common.Result.FAIL
    assert (
        got.path == "spec.jobTemplate.spec.template.spec.containers[*].securityContext.privileged"
    )


def test_template_annotations_are_read_from_the_template(restricted: evaluating.Engine) -> None:
    """A Deployment's pod annotations (not its own) are what the Pod view carries."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"},
        },
        "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "c"}]}}},
    }
    assert results_by_id(restricted.evaluate(deployment))["appArmorProfile"].result == "pass"
    deployment["spec"]["template"]["metadata"] = deployment["metadata"]
    got = results_by_id(restricted.evaluate(deployment))["appArmorProfile"]
    assert (got.result, got.path) == ("fail", "spec.template.metadata.annotations")


def test_objects_without_pod_specs_get_no_pod_results(restricted: evaluating.Engine) -> None:
    """A ConfigMap meets no pod check at all."""
    assert restricted.evaluate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}) == []


def test_a_workload_without_a_template_is_skipped(restricted: evaluating.Engine) -> None:
    """A Deployment with no pod template cannot be judged: every pod check says skip."""
    results = restricted.evaluate({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {}})
    assert results
    assert {r.result for r in results} == {common.Result.SKIP}


BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: demo
version: v1.0
checks:
  - id: labelled
    title: Config maps carry an owner label
    severity: low
    match:
      kinds: [ConfigMap]
      excludedNamespaces: [kube-system]
      namespaceSelector: {matchExpressions: [{key: tier, operator: In, values: [prod]}]}
    message: no owner
    messageExpression: '"configmap " + object.metadata.name + " has no owner label"'
    path: metadata.labels
    validation: has(object.metadata.labels) && "owner" in object.metadata.labels
  - id: dataSize
    title: Config maps hold at most 2 keys
    severity: info
    match: {kinds: [ConfigMap]}
    message: too big
    validation: size(object.data) <= 2
"""


@pytest.fixture(scope="module")
def demo() -> evaluating.Engine:
    (baseline,) = loading.load_documents(BASELINE, filename="demo.yaml").baselines
    return evaluating.Engine([baseline.at(None)])


def configmap(namespace: str = "apps", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": namespace},
        "data": data,
    }


PROD = {"metadata": {"name": "apps", "labels": {"tier": "prod"}}}


def test_a_message_expression_renders_the_failure_message(demo: evaluating.Engine) -> None:
    """A failing check with messageExpression reports the rendered message."""
    got = results_by_id(demo.evaluate(configmap(), namespace_obj=PROD))["labelled"]
    assert (got.result, got.message) == ("fail", "configmap cm has no owner label")


def test_excluded_namespaces_and_namespace_selectors_skip(demo: evaluating.Engine) -> None:
    """Outside the match the result is skip; an unknown namespace object is an error."""
    excluded = results_by_id(demo.evaluate(configmap("kube-system"), namespace_obj=PROD))
    assert excluded["labelled"].result is common.Result.SKIP
    dev = {"metadata": {"name": "apps", "labels": {"tier": "dev"}}}
    assert results_by_id(demo.evaluate(configmap(), namespace_obj=dev))["labelled"].result == "skip"
    assert results_by_id(demo.evaluate(configmap()))["labelled"].result is common.Result.ERROR


def test_a_runtime_cel_error_is_an_error_result_not_a_failure(demo: evaluating.Engine) -> None:
    """A check that cannot be evaluated (no data field) reports error, never fail."""
    obj = configmap()
    del obj["data"]
    got = results_by_id(demo.evaluate(obj, namespace_obj=PROD))["dataSize"]
    assert got.result is common.Result.ERROR
    assert got.path == ""


def test_the_digest_ignores_fields_no_check_reads(restricted: evaluating.Engine) -> None:
    """Status and scheduling changes keep the digest; a security-relevant change alters it."""
    pod = privileged_pod()
    before = restricted.digest(pod)
    changed = copy.deepcopy(pod)
    changed["status"] = {"phase": "Running"}
    changed["metadata"]["resourceVersion"] = "42"
    changed["spec"]["nodeName"] = "node-1"
    assert restricted.digest(changed) == before
    changed["spec"]["containers"][0]["securityContext"]["privileged"] = False
    assert restricted.digest(changed) != before


def test_the_projection_keeps_exactly_what_the_checks_read(restricted: evaluating.Engine) -> None:
    """The projected pod keeps the containers' security context, drops status and scheduling."""
    pod = privileged_pod()
    pod["status"] = {"phase": "Running"}
    pod["spec"]["nodeName"] = "node-1"
    projected = restricted.project(pod)
    assert "status" not in projected
    assert "nodeName" not in projected["spec"]
    # No restricted check reads a container's image: an image bump must not re-evaluate.
    assert projected["spec"]["containers"] == [{"securityContext": {"privileged": True}}]


def test_evaluating_one_pod_against_pss_restricted_is_fast(restricted: evaluating.Engine) -> None:
    """One pod evaluates against every restricted check well under a millisecond on average."""
    pod = privileged_pod()
    restricted.evaluate(pod)
    rounds = 2000
    start = time.process_time()
    for _ in range(rounds):
        restricted.evaluate(pod)
    per_object = (time.process_time() - start) / rounds
    assert per_object < 0.002, f"{per_object * 1e6:.0f} µs per object"


def test_cross_object_checks_run_only_with_an_inventory() -> None:
    """A check that needs the NetworkPolicy inventory is silent without it and judged with it."""
    cis = evaluating.Engine.from_refs(["cis-1.12"])
    assert "networkPolicies" in cis.inventory_views
    assert {"roleBindings", "pods", "deployments"} <= cis.inventory_views  # secretReadersInUse
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert "namespaceNetworkPolicy" not in results_by_id(cis.evaluate(namespace))
    empty = results_by_id(cis.evaluate(namespace, inventory={"networkPolicies": []}))
    assert empty["namespaceNetworkPolicy"].result is common.Result.FAIL
    policy = {"metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {}}}
    found = results_by_id(cis.evaluate(namespace, inventory={"networkPolicies": [policy]}))
    assert found["namespaceNetworkPolicy"].result is common.Result.PASS


def owned(obj: dict[str, Any], kind: str, api_version: str, *, controller: bool = True) -> Any:
    """``obj`` with an ownerReference to a ``kind`` object."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": "owner", "controller": controller}
    ]
    return obj


def test_pod_checks_roll_up_to_the_controlling_workload(restricted: evaluating.Engine) -> None:
    """A ReplicaSet's Pod skips pod checks (its template is judged on the controller)."""
    pod = owned(privileged_pod(), "ReplicaSet", "apps/v1")
    got = restricted.evaluate(pod)
    assert got
    assert {r.result for r in got} == {common.Result.SKIP}
    assert {r.message for r in got} == {evaluating.ROLLED_UP}


def test_bare_pods_and_foreign_or_non_controller_owners_keep_pod_checks(
    restricted: evaluating.Engine,
) -> None:
    """Bare Pods, mirror Pods (owned by a Node) and non-controller owners are still checked."""
    for pod in (
        privileged_pod(),
        owned(privileged_pod(), "Node", "v1"),
        owned(privileged_pod(), "ReplicaSet", "apps/v1", controller=False),
    ):
        assert results_by_id(restricted.evaluate(pod))["privileged"].result is common.Result.FAIL


def test_being_adopted_changes_the_digest(restricted: evaluating.Engine) -> None:
    """Adoption turns the pod checks off, so the digest must change with it."""
    pod = privileged_pod()
    assert restricted.digest(pod) != restricted.digest(owned(pod, "Job", "batch/v1"))
