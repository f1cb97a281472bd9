"""The bench's objects, as data: manifests modelled on real ones, adapted to an apiserver (pure).

The objects come from ``kposture.evaluate.synthetic`` (applications laid out the way Helm charts
lay them out, in hardened, typical and legacy profiles), adapted to what an apiserver accepts:
no uid, resourceVersion or status, no Pods or ReplicaSets (the controllers make those from
the Deployments), names that carry the run id, and a ``kposture.io/bench-run`` label on
everything so that cleanup finds it all.

The writes that follow are in ``churning``; ``Violation`` and ``CHECKS`` here tie a violating
write to the findings that must detect it.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from kposture.evaluate import synthetic

Manifest = dict[str, Any]

RUN_LABEL = "kposture.io/bench-run"
MODE_LABEL = "kposture.io/mode"  # read by remediate's policy: the namespace's remediation mode
ENFORCE_CONTAINER = "app"

# Pods and ReplicaSets are made by the controllers from the Deployments; created by hand they
# would be orphans that no real cluster has.
_CONTROLLER_MADE = frozenset({"Pod", "ReplicaSet"})
# Creation order: what others refer to comes first, so no Pod waits for its ServiceAccount.
_ORDER = (
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
)
_REAL_CLUSTER_ROLES = frozenset({"cluster-admin"})  # bound as they are, not copied


class Violation(enum.StrEnum):
    """What a violating write turns on in a Deployment's pod template."""

    PRIVILEGED = "privileged"
    HOST_NETWORK = "hostNetwork"


CHECKS: Mapping[Violation, frozenset[str]] = {
    # The ids of the built-in baselines' checks that fail on each violation (pss, cis, nsa).
    Violation.PRIVILEGED: frozenset({"privileged", "privilegedContainers", "noPrivileged"}),
    Violation.HOST_NETWORK: frozenset({"hostNamespaces", "hostNetwork"}),
}
"""A violation is detected by the first ``opened`` finding of any of these checks."""


def namespace_name(run_id: str, base: str) -> str:
    """The name of one of the run's namespaces (short, so it stays a valid DNS label)."""
    return f"kb-{run_id}-{base}"


def fleet(count: int, *, run_id: str, seed: int) -> list[Manifest]:
    """``count`` objects for one cluster, in creation order."""
    # Over-generate, because the controller-made kinds are dropped; then trim to ``count``.
    source = synthetic.fleet(count * 2 + 40, seed=seed).objects
    kept = [_adapt(obj, run_id) for obj in source if obj["kind"] not in _CONTROLLER_MADE]
    return creation_order(kept[:count])


def creation_order(manifests: Sequence[Manifest]) -> list[Manifest]:
    """``manifests`` sorted so that what others refer to is created first (stable)."""
    return sorted(manifests, key=lambda m: _ORDER.index(m["kind"]))


def enforce_namespace(count: int, *, run_id: str) -> list[Manifest]:
    """A namespace in ``enforce`` mode with ``count`` compliant Deployments to break and fix.

    Everything here passes every built-in check that has a fix, so the remediator has nothing
    to do until the bench breaks a Deployment. A default-deny NetworkPolicy keeps the
    namespace check (whose fix needs an approval) quiet.
    """
    namespace = namespace_name(run_id, "enforce")
    labels = {RUN_LABEL: run_id}
    out: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {**labels, MODE_LABEL: "enforce"}},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace, "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    ]
    for index in range(count):
        name = f"fixme-{index}"
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "automountServiceAccountToken": False,
            }
        )
        out.append(_hardened_deployment(name, namespace, labels))
    return out


def _hardened_deployment(name: str, namespace: str, labels: dict[str, str]) -> Manifest:
    selector = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {**labels, **selector}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": ENFORCE_CONTAINER,
                            "image": "registry.example.com/shop/api:1.4.2",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "200m", "memory": "128Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def _adapt(obj: Manifest, run_id: str) -> Manifest:
    """One synthetic object as a client would create it in this run."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "ownerReferences"):
        meta.pop(key, None)
    labels = dict(meta.get("labels") or {})
    kind = out["kind"]
    if kind == "Namespace":
        meta["name"] = namespace_name(run_id, meta["name"])
        labels["kubernetes.io/metadata.name"] = meta["name"]
        # Pod Security admission would refuse the legacy profile's Pods outright; a real fleet
        # that runs such workloads warns (and kposture reports them), so warn here too.
        level = labels.pop("pod-security.kubernetes.io/enforce", None)
        if level is not None:
            labels["pod-security.kubernetes.io/warn"] = level
        out.pop("spec", None)
    elif kind in ("ClusterRole", "ClusterRoleBinding"):
        meta["name"] = f"kb-{run_id}-{meta['name']}"
        ref = out.get("roleRef")
        if ref is not None and ref["name"] not in _REAL_CLUSTER_ROLES:
            ref["name"] = f"kb-{run_id}-{ref['name']}"
    if "namespace" in meta:
        meta["namespace"] = namespace_name(run_id, meta["namespace"])
    for subject in out.get("subjects") or ():
        if "namespace" in subject:
            subject["namespace"] = namespace_name(run_id, subject["namespace"])
    if kind == "StatefulSet":
        out["spec"]["serviceName"] = meta["name"]
    if kind == "ConfigMap":
        out["data"] = {"LOG_LEVEL": "info", "app.properties": "feature.checkout=true\n"}
    labels[RUN_LABEL] = run_id
    meta["labels"] = labels
    return out
