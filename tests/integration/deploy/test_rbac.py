"""The deploy/rbac manifests, applied to a real apiserver and checked with SubjectAccessReviews."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config

from kposture.cli.devenv import environment

pytestmark = pytest.mark.integration

RBAC_DIR = Path(__file__).resolve().parents[3] / "deploy" / "rbac"
NAMESPACE = "kposture-system"
CONTEXT = "kposture-1"

Check = tuple[str, str, str]  # (verb, group, resource)


def _manifests(name: str) -> list[dict[str, Any]]:
    with (RBAC_DIR / name).open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


async def _create_or_replace(api: client.ApiClient, doc: dict[str, Any]) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    name, kind = doc["metadata"]["name"], doc["kind"]
    ns = doc["metadata"].get("namespace", "")
    ops = {
        "Namespace": (core.create_namespace, core.replace_namespace, False),
        "ServiceAccount": (
            core.create_namespaced_service_account,
            core.replace_namespaced_service_account,
            True,
        ),
        "ClusterRole": (rbac.create_cluster_role, rbac.replace_cluster_role, False),
        "ClusterRoleBinding": (
            rbac.create_cluster_role_binding,
            rbac.replace_cluster_role_binding,
            False,
        ),
    }
    create, replace, namespaced = ops[kind]
    try:
        await (create(ns, doc) if namespaced else create(doc))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        await (replace(name, ns, doc) if namespaced else replace(name, doc))


@pytest.fixture(scope="module")
async def admin(local_env: environment.Environment) -> AsyncIterator[client.ApiClient]:
    """An admin client of kposture-1 with both RBAC manifests applied twice (idempotent)."""
    assert CONTEXT in local_env.contexts
    api = await config.new_client_from_config(
        config_file=str(local_env.kubeconfig), context=CONTEXT
    )
    try:
        for _ in range(2):
            for name in ("ingest.yaml", "remediate.yaml"):
                for doc in _manifests(name):
                    await _create_or_replace(api, doc)
        yield api
    finally:
        await api.close()


async def _allowed(
    api: client.ApiClient, sa: str, verb: str, group: str, resource: str, *, name: str = ""
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{NAMESPACE}:{sa}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{NAMESPACE}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, name=name or None
            ),
        )
    )
    result = await client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(result.status.allowed)


async def _denied_checks(api: client.ApiClient, sa: str, checks: list[Check]) -> list[Check]:
    return [c for c in checks if not await _allowed(api, sa, *c)]


async def _allowed_checks(api: client.ApiClient, sa: str, checks: list[Check]) -> list[Check]:
    return [c for c in checks if await _allowed(api, sa, *c)]


async def test_manifests_applied(admin: client.ApiClient) -> None:
    """Both ServiceAccounts and their cluster bindings exist in kposture-1 after the apply."""
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    for sa in ("kposture-ingest", "kposture-remediate"):
        await core.read_namespaced_service_account(sa, NAMESPACE)
        binding = await rbac.read_cluster_role_binding(sa)
        assert binding.role_ref.name == sa
        assert [(s.name, s.namespace) for s in binding.subjects] == [(sa, NAMESPACE)]


async def test_ingest_can_list_and_watch(admin: client.ApiClient) -> None:
    """Ingest may list and watch pods, deployments and secrets (and the other watched kinds)."""
    checks = [
        (verb, group, resource)
        for verb in ("list", "watch")
        for group, resource in (
            ("", "pods"),
            ("apps", "deployments"),
            ("", "secrets"),
            ("", "namespaces"),
            ("", "nodes"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
        )
    ]
    assert await _denied_checks(admin, "kposture-ingest", checks) == []


async def test_ingest_cannot_write_or_get_secrets(admin: client.ApiClient) -> None:
    """Ingest holds no write verb and no get on secrets, since kubeapi only lists and watches."""
    checks = [
        (verb, group, resource)
        for verb in ("create", "update", "patch", "delete", "deletecollection")
        for group, resource in (("", "pods"), ("apps", "deployments"), ("", "secrets"))
    ]
    checks.append(("get", "", "secrets"))
    assert await _allowed_checks(admin, "kposture-ingest", checks) == []


async def test_remediate_can_fix(admin: client.ApiClient) -> None:
    """Remediate may patch deployments, create network policies and delete pods."""
    checks = [
        ("patch", "apps", "deployments"),
        ("get", "apps", "deployments"),
        ("create", "networking.k8s.io", "networkpolicies"),
        ("patch", "networking.k8s.io", "networkpolicies"),
        ("patch", "", "serviceaccounts"),
        ("delete", "", "pods"),
        ("patch", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ]
    assert await _denied_checks(admin, "kposture-remediate", checks) == []


async def test_remediate_cannot_read_secrets_delete_workloads_or_escalate(
    admin: client.ApiClient,
) -> None:
    """Remediate cannot read secrets, delete deployments, or escalate/bind cluster roles."""
    checks: list[Check] = [(v, "", "secrets") for v in ("get", "list", "watch")]
    checks += [
        ("delete", "apps", "deployments"),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ("bind", "rbac.authorization.k8s.io", "clusterroles"),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
        ("impersonate", "", "serviceaccounts"),
    ]
    assert await _allowed_checks(admin, "kposture-remediate", checks) == []
    assert not await _allowed(
        admin,
        "kposture-remediate",
        "bind",
        "rbac.authorization.k8s.io",
        "clusterroles",
        name="cluster-admin",
    )
