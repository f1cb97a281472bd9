"""The demo's workloads: a small shop split over four namespaces on two clusters (pure data).

Everything here starts compliant with every built-in baseline (``pss-restricted``, ``cis-1.12``
and ``nsa-cisa-1.2``), so that each drift scenario later opens a finding on a clean object and
the posture score visibly drops and recovers. That means: non-root pods with the runtime's
seccomp profile, no privilege escalation, all capabilities dropped, read-only root
filesystems, CPU and memory limits, no automounted service-account tokens, a default-deny
NetworkPolicy in every namespace, and Roles that read only ConfigMaps.

Namespace names carry the run id, so a rerun never waits for the previous run's namespaces to
finish terminating; every object carries ``kposture.io/demo-run`` so leftovers can be found.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kposture.schemas import findings

Mode = findings.RemediationMode
DEMO_LABEL = "kposture.io/demo"
RUN_LABEL = "kposture.io/demo-run"
MODE_LABEL = "kposture.io/mode"  # read by remediate's policy: the namespace's remediation mode
CONTAINER = "app"
"""The container name in every demo Deployment (drift patches address it by name)."""

Manifest = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class App:
    """One microservice: a ServiceAccount, a ConfigMap, a Deployment and maybe a Service."""

    name: str
    replicas: int
    port: int | None  # None: a worker with no Service
    image: str


@dataclasses.dataclass(frozen=True)
class Tenant:
    """One team's namespace on one cluster, with its remediation mode."""

    base: str  # the namespace name without the run id
    cluster: int  # index into the environment's contexts
    mode: Mode
    team: str
    apps: tuple[App, ...]
    credentials: str | None = None  # the name of a Secret the team's apps may reference

    def namespace(self, run_id: str) -> str:
        """The namespace name for one demo run."""
        return f"{self.base}-{run_id}"


TENANTS: tuple[Tenant, ...] = (
    Tenant(
        "payments",
        0,
        Mode.ENFORCE,
        "payments",
        (
            App("payments-api", 2, 8080, "ghcr.io/acme/payments-api:2.14.1"),
            App("ledger", 1, 9090, "ghcr.io/acme/ledger:1.8.0"),
        ),
    ),
    Tenant(
        "storefront",
        0,
        Mode.ENFORCE,
        "web",
        (
            App("web", 2, 8080, "ghcr.io/acme/storefront-web:5.2.0"),
            App("cart", 1, 8080, "ghcr.io/acme/cart:3.0.4"),
        ),
        credentials="storefront-db",
    ),
    Tenant(
        "checkout",
        1,
        Mode.ENFORCE,
        "checkout",
        (
            App("checkout-api", 2, 8080, "ghcr.io/acme/checkout-api:4.1.0"),
            App("checkout-worker", 1, None, "ghcr.io/acme/checkout-worker:4.1.0"),
        ),
    ),
    Tenant(
        "analytics",
        1,
        Mode.DRY_RUN,
        "data",
        (
            App("etl", 1, None, "ghcr.io/acme/etl:0.9.3"),
            App("reporter", 1, 8080, "ghcr.io/acme/reporter:1.2.2"),
        ),
    ),
)


def labels(run_id: str, **extra: str) -> dict[str, str]:
    """The labels every demo object carries, plus ``extra``."""
    return {
        DEMO_LABEL: "true",
        RUN_LABEL: run_id,
        "app.kubernetes.io/part-of": "acme-shop",
        **extra,
    }


def namespace(name: str, *, run_id: str, mode: Mode, team: str) -> Manifest:
    """A namespace with its remediation mode and Pod Security Admission labels.

    PSA enforces ``baseline`` and warns on ``restricted``: a privileged pod is refused at
    admission, but a pod that only misses a restricted setting still starts, so a fix that
    restores one restricted setting at a time can roll out and be verified healthy.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": labels(
                run_id,
                team=team,
                **{
                    MODE_LABEL: str(mode),
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            ),
        },
    }


def default_service_account(ns: str, *, run_id: str) -> Manifest:
    """The namespace's ``default`` ServiceAccount, without an automounted token (CIS 5.1.5)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns, "labels": labels(run_id)},
        "automountServiceAccountToken": False,
    }


def _meta(name: str, ns: str, run_id: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "labels": labels(run_id, **extra)}


def _deployment(app: App, ns: str, *, run_id: str, team: str) -> Manifest:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": app.image,
        "env": [
            {
                "name": "LOG_LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": f"{app.name}-config", "key": "level"}},
            }
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a container path, not ours
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
        ],
    }
    if app.port is not None:
        container["ports"] = [{"name": "http", "containerPort": app.port}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(app.name, ns, run_id, team=team, app=app.name),
        "spec": {
            "replicas": app.replicas,
            "selector": {"matchLabels": {"app": app.name}},
            "template": {
                "metadata": {"labels": {"app": app.name, "team": team}},
                "spec": {
                    "serviceAccountName": app.name,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "config", "configMap": {"name": f"{app.name}-config"}},
                    ],
                },
            },
        },
    }


def _network_policies(tenant: Tenant, ns: str, run_id: str) -> list[Manifest]:
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("default-deny", ns, run_id),
        # An empty podSelector with no rules denies all traffic to and from every pod.
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    allow = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"allow-{app.name}-http", ns, run_id),
            "spec": {
                "podSelector": {"matchLabels": {"app": app.name}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"app.kubernetes.io/part-of": "acme-shop"}
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": app.port}],
                    }
                ],
            },
        }
        for app in tenant.apps
        if app.port is not None
    ]
    return [deny, *allow]


def tenant_objects(tenant: Tenant, run_id: str) -> list[Manifest]:
    """Every object of one tenant, in creation order (the Namespace first)."""
    ns = tenant.namespace(run_id)
    out: list[Manifest] = [namespace(ns, run_id=run_id, mode=tenant.mode, team=tenant.team)]
    # Network policies before the workloads, so the namespace never looks unprotected.
    out.extend(_network_policies(tenant, ns, run_id))
    for app in tenant.apps:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _meta(app.name, ns, run_id, app=app.name),
                "automountServiceAccountToken": False,
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(f"{app.name}-config", ns, run_id, app=app.name),
                "data": {"level": "info", "region": "eu-west-1"},
            }
        )
    if tenant.credentials is not None:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(tenant.credentials, ns, run_id),
                "type": "Opaque",
                # A placeholder: ingest never publishes Secret data anyway.
                "stringData": {"password": "demo-placeholder"},
            }
        )
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("config-reader", ns, run_id),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
            ],
        }
    )
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("config-reader", ns, run_id),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "config-reader",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": app.name, "namespace": ns} for app in tenant.apps
            ],
        }
    )
    for app in tenant.apps:
        out.append(_deployment(app, ns, run_id=run_id, team=tenant.team))
        if app.port is not None:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": _meta(app.name, ns, run_id, app=app.name),
                    "spec": {
                        "type": "ClusterIP",
                        "selector": {"app": app.name},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                    },
                }
            )
    return out


def deployments(tenant: Tenant, run_id: str) -> list[tuple[str, str]]:
    """``(namespace, name)`` of the tenant's Deployments, to wait for their rollouts."""
    return [(tenant.namespace(run_id), app.name) for app in tenant.apps]
