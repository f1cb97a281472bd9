"""Exported baselines enforced by a real apiserver: ValidatingAdmissionPolicy end to end.

`kposture baseline export --format vap` output is created on cluster `kposture-1` of the
local environment, bound only to a namespace this module creates (so other tests running
against the same cluster are never blocked), and then exercised with real requests: a
violating Pod is rejected with the check's message, a compliant one is admitted, workloads
are judged by their pod template, and the upstream Pod Security Admission fixtures get the
engine's verdicts. Everything created is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config

from kposture.cli.devenv import environment
from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import loading
from kposture.evaluate.scan import exporting
from kposture.schemas import common

pytestmark = pytest.mark.integration

CONTEXT = "kposture-1"
CORPUS = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "corpora"
    / "pod-security-admission"
    / "testdata"
)
ENFORCEMENT_TIMEOUT_S = 30.0
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
COLLECTIONS = {
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "CronJob": "/apis/batch/v1/namespaces/{namespace}/cronjobs",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "Namespace": "/api/v1/namespaces",
    "ValidatingAdmissionPolicy": f"{ADMISSION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{ADMISSION}/validatingadmissionpolicybindings",
}
HARDENED_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "hardened"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "app",
                "image": "registry.example/app:1",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    },
}


def _host_pid(pod: Mapping[str, Any]) -> dict[str, Any]:
    # Sharing the host's PID namespace fails exactly one restricted check (hostNamespaces),
    # and unlike some other violations it passes the API's own validation.
    violating = copy.deepcopy(dict(pod))
    violating["metadata"]["name"] = "host-pid"
    violating["spec"]["hostPID"] = True
    return violating


def _deployment(pod: Mapping[str, Any]) -> dict[str, Any]:
    labels = {"app": pod["metadata"]["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": pod["metadata"]["name"]},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


def _cron_job(pod: Mapping[str, Any]) -> dict[str, Any]:
    template = _deployment(pod)["spec"]["template"]
    # Job templates require a restart policy other than Always.
    template = {**template, "spec": {**template["spec"], "restartPolicy": "Never"}}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": pod["metadata"]["name"]},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": template}}},
    }


class Kube:
    """Raw JSON requests to one apiserver as its admin.

    Raw, because the client's typed models refuse some valid objects of the PSA corpus, and
    a test of admission wants the status and message of every answer, not exceptions.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def request(
        self, method: str, path: str, body: Any = None, *, dry_run: bool = False
    ) -> tuple[int, str]:
        """Send one request; the HTTP status and, for an error, the Status message."""
        response = await self.api.call_api(
            path,
            method,
            query_params=[("dryRun", "All")] if dry_run else [],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        try:
            text = (await response.read()).decode()
        finally:
            response.release()
        status = int(response.status)
        if status < 300:
            return status, ""
        try:
            return status, str(json.loads(text).get("message", text))
        except ValueError:
            return status, text

    async def create(
        self, obj: Mapping[str, Any], *, namespace: str = "", dry_run: bool = False
    ) -> tuple[int, str]:
        """POST ``obj`` to the collection of its kind (in ``namespace`` if namespaced)."""
        path = COLLECTIONS[obj["kind"]].format(namespace=namespace)
        return await self.request("POST", path, dict(obj), dry_run=dry_run)

    async def delete(self, kind: str, name: str, *, namespace: str = "") -> None:
        """Delete an object; a missing one is fine (clean-up after a partial set-up)."""
        path = COLLECTIONS[kind].format(namespace=namespace)
        status, message = await self.request("DELETE", f"{path}/{name}")
        assert status < 300 or status == 404, f"DELETE {kind} {name}: {status} {message}"


@pytest.fixture(scope="module")
def kubeconfig(request: pytest.FixtureRequest) -> Path:
    """The shared environment's kubeconfig; if it cannot start, the test fails with why."""
    try:
        env: environment.Environment = request.getfixturevalue("local_env")
    except Exception as exc:  # noqa: BLE001 - any failure to start is the reason to report
        pytest.fail(f"the local environment cannot start: {type(exc).__name__}: {exc}")
    assert CONTEXT in env.contexts, f"no context {CONTEXT} in {env.contexts}"
    return env.kubeconfig


@pytest.fixture(scope="module")
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    """An admin client for cluster `kposture-1`."""
    api_client = await config.new_client_from_config(config_file=str(kubeconfig), context=CONTEXT)
    yield Kube(api_client)
    await api_client.close()


async def _namespace(kube: Kube, name: str, labels: Mapping[str, str] | None = None) -> None:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    status, message = await kube.create(namespace)
    assert status == 201, f"namespace {name}: {status} {message}"
    # The controller manager creates the "default" service account shortly after; Pods are
    # rejected until it exists, so create it now (losing that race, 409, is fine).
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    status, message = await kube.create(account, namespace=name)
    assert status in (201, 409), f"service account in {name}: {status} {message}"


@pytest.fixture(scope="module")
async def enforced(kube: Kube) -> AsyncIterator[str]:
    """A namespace where the exported pss-restricted policy is bound with Deny; its name."""
    suffix = uuid.uuid4().hex[:8]
    namespace = f"it-vap-{suffix}"
    labels = {"kposture.io/vap-test": suffix}
    exported = exporting.export_vap(
        [loading.policy("pss-restricted")], namespace_selector={"matchLabels": labels}
    )
    objects = _renamed(exported.objects, suffix)
    try:
        await _namespace(kube, namespace, labels)
        for obj in objects:
            status, message = await kube.create(obj)
            assert status == 201, f"{obj['kind']} {obj['metadata']['name']}: {status} {message}"
        await _wait_for_enforcement(kube, namespace)
        yield namespace
    finally:
        for obj in reversed(objects):
            await kube.delete(obj["kind"], obj["metadata"]["name"])
        await kube.delete("Namespace", namespace)


def _renamed(objects: tuple[dict[str, Any], ...], suffix: str) -> list[dict[str, Any]]:
    # Policies are cluster-scoped: a per-run suffix keeps concurrent runs from colliding.
    renamed = copy.deepcopy(list(objects))
    for obj in renamed:
        obj["metadata"]["name"] += f"-{suffix}"
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] += f"-{suffix}"
    return renamed


async def _wait_for_enforcement(kube: Kube, namespace: str) -> None:
    # Admission policies take effect once the apiserver's informers have seen them.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ENFORCEMENT_TIMEOUT_S
    while True:
        _, message = await kube.create(_host_pid(HARDENED_POD), namespace=namespace, dry_run=True)
        if "ValidatingAdmissionPolicy" in message:
            return
        if loop.time() > deadline:
            pytest.fail(f"the exported policy was not enforced within {ENFORCEMENT_TIMEOUT_S} s")
        await asyncio.sleep(0.2)


async def test_a_violating_pod_is_rejected_with_the_checks_message(
    kube: Kube, enforced: str
) -> None:
    """A Pod sharing the host's PIDs is denied (403/422) with the check's message."""
    status, message = await kube.create(_host_pid(HARDENED_POD), namespace=enforced)
    assert status in (403, 422), message
    assert "ValidatingAdmissionPolicy" in message
    assert (
        "hostNamespaces: host namespaces (hostNetwork, hostPID and hostIPC must not be true)"
        in message
    )


async def test_a_compliant_pod_is_admitted(kube: Kube, enforced: str) -> None:
    """A Pod meeting every restricted check is created, then deleted."""
    try:
        status, message = await kube.create(HARDENED_POD, namespace=enforced)
        assert status == 201, message
        status, message = await kube.request("GET", f"/api/v1/namespaces/{enforced}/pods/hardened")
        assert status == 200, message
    finally:
        await kube.delete("Pod", "hardened", namespace=enforced)


async def test_a_workload_is_judged_by_its_pod_template(kube: Kube, enforced: str) -> None:
    """A Deployment whose template shares the host's PIDs is denied; a hardened one passes."""
    violating = _deployment(_host_pid(HARDENED_POD))
    status, message = await kube.create(violating, namespace=enforced, dry_run=True)
    assert status in (403, 422), message
    assert "hostNamespaces: host namespaces" in message
    status, message = await kube.create(_deployment(HARDENED_POD), namespace=enforced, dry_run=True)
    assert status == 201, message


async def test_outside_the_bound_namespace_nothing_is_enforced(kube: Kube, enforced: str) -> None:
    """The binding's namespace selector confines enforcement to the test namespace."""
    unbound = f"{enforced}-unbound"
    try:
        await _namespace(kube, unbound)
        status, message = await kube.create(
            _host_pid(HARDENED_POD), namespace=unbound, dry_run=True
        )
        assert status == 201, message
    finally:
        await kube.delete("Namespace", unbound)


async def test_every_exported_builtin_policy_compiles_on_the_apiserver(kube: Kube) -> None:
    """The apiserver accepts every built-in baseline's policies (it compiles their CEL)."""
    exported = exporting.export_vap([loading.policy(name) for name in loading.builtin_names()])
    refused: list[str] = []
    for obj in exported.objects:
        status, message = await kube.create(obj, dry_run=True)
        if status != 201:
            refused.append(f"{obj['kind']} {obj['metadata']['name']}: {status} {message}")
    assert not refused, "\n".join(refused)


async def test_the_psa_fixtures_get_the_engines_verdict_at_admission(
    kube: Kube, enforced: str
) -> None:
    """Each restricted v1.37 fixture, as a Pod, a Deployment and a CronJob, is denied by the
    policy exactly when the engine fails it."""
    fixtures = sorted((CORPUS / "restricted" / "v1.37").glob("*/*.yaml"))
    assert fixtures, f"the PSA corpus is missing under {CORPUS}"
    evaluator = evaluating.Engine([loading.policy("pss-restricted")])
    disagreements: list[str] = []
    compared = attempted = 0
    for path in fixtures:
        pod = yaml.safe_load(path.read_text(encoding="utf-8"))
        pod["metadata"].pop("namespace", None)
        # Upstream names some fixtures with "_", which object names may not contain.
        pod["metadata"]["name"] = path.stem.replace("_", "-")
        for obj in (pod, _deployment(pod), _cron_job(pod)):
            attempted += 1
            expected_denied = any(
                result.result is common.Result.FAIL for result in evaluator.evaluate(obj)
            )
            status, message = await kube.create(obj, namespace=enforced, dry_run=True)
            denied_by_policy = status in (403, 422) and "ValidatingAdmissionPolicy" in message
            if status >= 300 and not denied_by_policy:
                # Refused before admission (API validation of a field this version rejects):
                # the policy never saw it, so there is nothing to compare.
                continue
            compared += 1
            if denied_by_policy != expected_denied:
                disagreements.append(
                    f"{path.parent.name}/{path.name} as {obj['kind']}: "
                    f"engine denies={expected_denied}, apiserver {status} {message}"
                )
    assert not disagreements, "\n".join(disagreements)
    assert compared >= attempted * 0.9, f"only {compared} of {attempted} compared"
