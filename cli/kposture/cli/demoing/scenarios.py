"""The drift scenarios, injected one at a time into the clean workloads (pure data).

Each scenario names the object it writes, the write itself (a create or a strategic-merge
patch, as a person with ``kubectl`` would do it), the check ids of the built-in baselines that
must open a finding on that object, and what the remediation policy should make of it:

* ``fixed`` -- an enforce namespace and a fix: the object must be observed fixed;
* ``dry-run`` -- a dry-run namespace and a fix: a server-side dry run is audited, nothing changes;
* ``approval`` -- a fix whose risk class needs a human: the action waits for approval;
* ``detect`` -- no mechanical fix exists: detection is the whole story.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kposture.cli.demoing import manifests

Mode = manifests.Mode


class Expect(enum.StrEnum):
    """What should follow the detection."""

    FIXED = "fixed"
    DRY_RUN = "dry-run"
    APPROVAL = "approval"
    DETECT = "detect"


class Op(enum.StrEnum):
    """How the drift is written."""

    CREATE = "create"
    PATCH = "patch"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One drift: what is written where, what must detect it, and what should happen next.

    ``tenant`` is the base name of the namespace (see ``manifests.TENANTS``), or None for a
    cluster-scoped object. ``body`` builds the manifest (CREATE) or the patch (PATCH) for a
    run id. ``fixed`` tells, on the re-read object, that the drift was undone.
    """

    id: str
    title: str
    cluster: int
    tenant: str | None
    kind: str
    name: str  # may contain "{run}", replaced by the run id
    op: Op
    body: Callable[[str, str], dict[str, Any]]  # (namespace, run id) -> manifest or patch
    checks: frozenset[str]
    expect: Expect
    mode: Mode
    fixed: Callable[[Mapping[str, Any]], bool] | None = None

    def object_name(self, run_id: str) -> str:
        """The written object's name in one run."""
        return self.name.replace("{run}", run_id)

    def namespace(self, run_id: str) -> str:
        """The written object's namespace in one run ("" when cluster-scoped)."""
        if self.tenant is None:
            return ""
        if self.kind == "Namespace":
            return ""
        return f"{self.tenant}-{run_id}"


def _containers(deployment: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for key in ("initContainers", "containers"):
        yield from spec.get(key) or ()


def _pod_spec(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}


def not_privileged(deployment: Mapping[str, Any]) -> bool:
    """No container of the template is privileged."""
    return not any(
        (c.get("securityContext") or {}).get("privileged") is True for c in _containers(deployment)
    )


def not_unconfined(deployment: Mapping[str, Any]) -> bool:
    """Neither the pod nor a container of the template runs without seccomp."""
    holders = [_pod_spec(deployment), *_containers(deployment)]
    return not any(
        ((h.get("securityContext") or {}).get("seccompProfile") or {}).get("type") == "Unconfined"
        for h in holders
    )


def _container_patch(**container: Any) -> dict[str, Any]:
    return {
        "spec": {"template": {"spec": {"containers": [{"name": manifests.CONTAINER, **container}]}}}
    }


def _privileged(_ns: str, _run: str) -> dict[str, Any]:
    # The apiserver refuses privileged=true with allowPrivilegeEscalation=false, so whoever
    # turns privileged on removes the other setting too (null deletes it in a merge patch).
    return _container_patch(securityContext={"privileged": True, "allowPrivilegeEscalation": None})


def _host_path(_ns: str, _run: str) -> dict[str, Any]:
    patch = _container_patch(
        volumeMounts=[{"name": "host-logs", "mountPath": "/host/var/log", "readOnly": True}]
    )
    patch["spec"]["template"]["spec"]["volumes"] = [
        {"name": "host-logs", "hostPath": {"path": "/var/log", "type": "Directory"}}
    ]
    return patch


def _secret_env(_ns: str, _run: str) -> dict[str, Any]:
    return _container_patch(
        env=[
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "storefront-db", "key": "password"}},
            }
        ]
    )


def _cluster_admin(_ns: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"reporter-admin-{run}", "labels": manifests.labels(run)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "reporter", "namespace": f"analytics-{run}"}
        ],
    }


def _bare_namespace(_ns: str, run: str) -> dict[str, Any]:
    # A team's new namespace, labelled like the others but created without any NetworkPolicy.
    return manifests.namespace(f"sandbox-{run}", run_id=run, mode=Mode.DRY_RUN, team="research")


def _wildcard_role(ns: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "ops-debug", "namespace": ns, "labels": manifests.labels(run)},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }


def _unconfined(_ns: str, _run: str) -> dict[str, Any]:
    return {
        "spec": {
            "template": {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}
        }
    }


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        id="privileged-container",
        title="a privileged container",
        cluster=0,
        tenant="payments",
        kind="Deployment",
        name="payments-api",
        op=Op.PATCH,
        body=_privileged,
        checks=frozenset({"privileged", "privilegedContainers", "noPrivileged"}),
        expect=Expect.FIXED,
        mode=Mode.ENFORCE,
        fixed=not_privileged,
    ),
    Scenario(
        id="hostpath-volume",
        title="a hostPath volume",
        cluster=1,
        tenant="analytics",
        kind="Deployment",
        name="etl",
        op=Op.PATCH,
        body=_host_path,
        checks=frozenset({"hostPathVolumes", "restrictedVolumes"}),
        expect=Expect.DETECT,
        mode=Mode.DRY_RUN,
    ),
    Scenario(
        id="secret-in-env",
        title="a secret in an environment variable",
        cluster=0,
        tenant="storefront",
        kind="Deployment",
        name="web",
        op=Op.PATCH,
        body=_secret_env,
        checks=frozenset({"secretsAsEnv"}),
        expect=Expect.DETECT,
        mode=Mode.ENFORCE,
    ),
    Scenario(
        id="cluster-admin-binding",
        title="a cluster-admin binding",
        cluster=1,
        tenant=None,
        kind="ClusterRoleBinding",
        name="reporter-admin-{run}",
        op=Op.CREATE,
        body=_cluster_admin,
        checks=frozenset({"clusterAdminBinding"}),
        expect=Expect.APPROVAL,
        mode=Mode.ENFORCE,  # from the demo config: cis-1.12/clusterAdminBinding: enforce
    ),
    Scenario(
        id="namespace-without-networkpolicy",
        title="a namespace without a NetworkPolicy",
        cluster=0,
        tenant="sandbox",
        kind="Namespace",
        name="sandbox-{run}",
        op=Op.CREATE,
        body=_bare_namespace,
        checks=frozenset({"namespaceNetworkPolicy", "defaultDenyNetworkPolicy"}),
        expect=Expect.DRY_RUN,
        mode=Mode.DRY_RUN,
    ),
    Scenario(
        id="wildcard-role",
        title="a wildcard Role",
        cluster=0,
        tenant="storefront",
        kind="Role",
        name="ops-debug",
        op=Op.CREATE,
        body=_wildcard_role,
        checks=frozenset({"wildcardRules"}),
        expect=Expect.DETECT,
        mode=Mode.ENFORCE,
    ),
    Scenario(
        id="seccomp-unconfined",
        title="a disabled seccomp profile (Unconfined)",
        cluster=1,
        tenant="checkout",
        kind="Deployment",
        name="checkout-api",
        op=Op.PATCH,
        body=_unconfined,
        checks=frozenset(
            {
                "seccompProfile_baseline",
                "seccompProfile_restricted",
                "seccompRuntimeDefault",
                "seccompProfile",
            }
        ),
        expect=Expect.FIXED,
        mode=Mode.ENFORCE,
        fixed=not_unconfined,
    ),
)
"""The scenarios, in the order they are injected."""

REMEDIATE_MODES: Mapping[str, str] = {"cis-1.12/clusterAdminBinding": "enforce"}
"""Remediation modes from the demo's config: cluster-scoped objects have no namespace label."""
