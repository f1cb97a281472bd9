"""Synthetic inventories and change streams for the evaluate benchmark, modelled on real manifests.

A fleet is a set of namespaces, each holding a few applications the way Helm charts lay them
out: a Deployment (sometimes a StatefulSet or DaemonSet) with its ReplicaSet and Pods, a
Service, a ServiceAccount, a ConfigMap and a Secret (metadata only, as ingest publishes
them), and often a Role with its RoleBinding; some namespaces have NetworkPolicies, and the
cluster has its ClusterRoles and bindings. Each application follows one of three profiles,
so the baselines see realistic proportions of passes and failures:

* ``hardened`` (restricted-compliant: non-root, read-only root, all capabilities dropped),
* ``typical`` (no security context at all, the common case in the wild),
* ``legacy`` (privileged, host namespaces, hostPath volumes, secrets in the environment).

Updates come in the kinds a watch really delivers: ``changed`` (a spec edit that a check
reads, such as a new security context, or one it does not read, such as an image tag or a
replica count), ``status`` (only the status moved; ingest's digest, which excludes status, is
unchanged) and ``resync`` (the same object re-emitted by anti-entropy). Everything is
deterministic for a given seed. Pure: no I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import orjson

from kposture.schemas import common, resources

PROFILES = (("hardened", 0.35), ("typical", 0.5), ("legacy", 0.15))
"""Application profiles and their share of the fleet."""

UPDATE_MIX = (("changed", 0.5), ("status", 0.3), ("resync", 0.2))
"""The default share of each kind of update in a change stream."""

_IMAGES = ("nginx", "redis", "postgres", "envoyproxy/envoy", "grafana/grafana", "shop/api")
_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass
class Fleet:
    """The objects of one synthetic cluster, in creation order (namespaces first)."""

    cluster: str
    objects: list[dict[str, Any]]


def fleet(count: int, *, seed: int = 0, cluster: str = "bench") -> Fleet:
    """About ``count`` objects (exactly ``count``, trimmed) for one cluster."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    out: list[dict[str, Any]] = []
    out.extend(_cluster_rbac(rng))
    index = 0
    while len(out) < count:
        namespace = f"team-{index}"
        index += 1
        out.append(_namespace(namespace, rng))
        if rng.random() < 0.6:
            out.append(_network_policy(namespace, "default-deny"))
        for app in range(rng.randint(2, 5)):
            out.extend(_application(namespace, f"app{app}", rng))
    return Fleet(cluster, out[:count])


def added(fleet_: Fleet) -> list[resources.ResourceEvent]:
    """One ``added`` event per object: a cold start of the evaluator."""
    return [event(fleet_.cluster, obj, resources.Change.ADDED) for obj in fleet_.objects]


def updates(
    fleet_: Fleet,
    count: int,
    *,
    seed: int = 0,
    mix: tuple[tuple[str, float], ...] = UPDATE_MIX,
) -> Iterator[tuple[str, resources.ResourceEvent]]:
    """``count`` update events as ``(kind of update, event)``; ``fleet_`` follows the edits."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    kinds = [name for name, _ in mix]
    weights = [weight for _, weight in mix]
    objects = fleet_.objects
    for _ in range(count):
        position = rng.randrange(len(objects))
        update = rng.choices(kinds, weights)[0]
        obj = objects[position]
        if update == "changed":
            obj = objects[position] = _edit(obj, rng)
        elif update == "status":
            obj = objects[position] = _status_edit(obj, rng)
        yield update, event(fleet_.cluster, obj, resources.Change.MODIFIED)


def event(cluster: str, obj: dict[str, Any], change: resources.Change) -> resources.ResourceEvent:
    """The resource event ingest would publish for ``obj``."""
    metadata = obj["metadata"]
    ref = common.ObjectRef(
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        name=metadata["name"],
        uid=metadata["uid"],
        namespace=metadata.get("namespace", ""),
        resource_version=metadata["resourceVersion"],
    )
    return resources.ResourceEvent(
        cluster=cluster,
        change=change,
        ref=ref,
        object=obj,
        digest=source_digest(obj),
        observed_at=_EPOCH,
    )


def source_digest(obj: dict[str, Any]) -> str:
    """Ingest's digest: the object without status and resourceVersion."""
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


# -- edits --------------------------------------------------------------------------------


def _edit(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    _bump(new)
    spec = _pod_spec(new)
    if spec is None:
        _edit_other(new, rng)
        return new
    container = spec["containers"][0]
    choice = rng.random()
    if choice < 0.4:
        # Image bumps are the most common edit; no check reads the image.
        container["image"] = f"{container['image'].split(':')[0]}:{rng.randrange(1, 99)}.0"
    elif choice < 0.7:
        context = container.setdefault("securityContext", {})
        context["runAsNonRoot"] = not context.get("runAsNonRoot", False)
    elif choice < 0.85:
        context = container.setdefault("securityContext", {})
        context["allowPrivilegeEscalation"] = not context.get("allowPrivilegeEscalation", True)
    else:
        container.setdefault("env", []).append({"name": f"FLAG_{rng.randrange(99)}", "value": "1"})
    return new


def _edit_other(obj: dict[str, Any], rng: random.Random) -> None:
    kind = obj["kind"]
    choice = rng.random()
    if kind in ("Role", "ClusterRole") and choice < 0.5:
        obj["rules"][0]["verbs"] = [*obj["rules"][0]["verbs"], rng.choice(("create", "delete"))]
    elif kind in ("RoleBinding", "ClusterRoleBinding") and choice < 0.5:
        subject = {"kind": "User", "name": f"user{rng.randrange(99)}@example.com"}
        obj["subjects"] = [*obj.get("subjects", []), subject]
    elif kind == "Service" and choice < 0.3:
        obj["spec"]["type"] = rng.choice(("ClusterIP", "NodePort"))
    elif kind == "Namespace" and choice < 0.1:
        obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    else:
        # Most edits of other objects are tool annotations (deploy ids, checksums).
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations["deploy.example.com/revision"] = str(rng.randrange(10**6))


def _status_edit(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    new = dict(obj)
    new["metadata"] = dict(obj["metadata"])
    _bump(new)
    new["status"] = {**(obj.get("status") or {}), "observedGeneration": rng.randrange(1, 50)}
    return new


def _bump(obj: dict[str, Any]) -> None:
    metadata = obj["metadata"]
    metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj["kind"]
    if kind == "Pod":
        spec: dict[str, Any] = obj["spec"]
        return spec
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    template = obj.get("spec", {}).get("template")
    return template["spec"] if isinstance(template, dict) else None


# -- manifests ----------------------------------------------------------------------------


def _meta(
    name: str, rng: random.Random, namespace: str | None = None, **labels: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "uid": f"{rng.getrandbits(64):016x}-{rng.getrandbits(32):08x}",
        "resourceVersion": str(rng.randrange(1000, 10**7)),
        "creationTimestamp": "2025-01-01T00:00:00Z",
        "labels": labels,
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return metadata


def _namespace(name: str, rng: random.Random) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name, "team": name.removeprefix("team-")}
    if rng.random() < 0.5:
        labels["pod-security.kubernetes.io/enforce"] = rng.choice(("baseline", "restricted"))
    if rng.random() < 0.2:
        labels["kposture.io/criticality"] = rng.choice(("high", "critical", "low"))
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(name, rng, **labels),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _application(namespace: str, name: str, rng: random.Random) -> list[dict[str, Any]]:
    profile = rng.choices([p for p, _ in PROFILES], [w for _, w in PROFILES])[0]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": f"{name}-prod"}
    controller = rng.choices(("Deployment", "StatefulSet", "DaemonSet"), (0.8, 0.12, 0.08))[0]
    template = {"metadata": {"labels": labels}, "spec": _pod(name, profile, rng)}
    workload_spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": template,
    }
    if controller != "DaemonSet":
        workload_spec["replicas"] = rng.choice((1, 2, 3))
    workload = {
        "apiVersion": "apps/v1",
        "kind": controller,
        "metadata": _meta(name, rng, namespace, **labels),
        "spec": workload_spec,
        "status": {"observedGeneration": 1, "replicas": workload_spec.get("replicas", 3)},
    }
    out = [workload]
    if controller == "Deployment":
        replica_set = copy.deepcopy(workload)
        replica_set["kind"] = "ReplicaSet"
        replica_set["metadata"] = {
            **_meta(f"{name}-7d4b9c", rng, namespace, **labels),
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "controller": True}
            ],
        }
        out.append(replica_set)
    out.extend(
        _running_pod(namespace, f"{name}-7d4b9c-{replica:05d}", template, rng)
        for replica in range(workload_spec.get("replicas", 2))
    )
    out.append(_service(namespace, name, labels, rng))
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(name, rng, namespace, **labels),
    }
    if profile == "hardened":
        account["automountServiceAccountToken"] = False
    out.append(account)
    out.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(f"{name}-config", rng, namespace),
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(f"{name}-credentials", rng, namespace),
            "type": "Opaque",
        }
    )
    if rng.random() < 0.5:
        out.extend(_role_and_binding(namespace, name, profile, rng))
    return out


def _pod(name: str, profile: str, rng: random.Random) -> dict[str, Any]:
    image = f"{rng.choice(_IMAGES)}:{rng.randrange(1, 30)}.{rng.randrange(10)}"
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
        "terminationMessagePath": "/dev/termination-log",
    }
    spec: dict[str, Any] = {
        "serviceAccountName": name,
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30,
    }
    if profile == "hardened":
        spec["automountServiceAccountToken"] = False
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        container["resources"] = {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }
        spec["volumes"].append({"name": "tmp", "emptyDir": {}})
    elif profile == "legacy":
        spec["hostNetwork"] = rng.random() < 0.5
        container["securityContext"] = {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}}
        container["env"].append(
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-credentials", "key": "password"}},
            }
        )
        spec["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
        container["volumeMounts"].append({"name": "docker", "mountPath": "/var/run/docker.sock"})
    if rng.random() < 0.2:
        spec["initContainers"] = [
            {"name": "migrate", "image": image, "command": ["/app/migrate"], "resources": {}}
        ]
    if rng.random() < 0.3:
        spec["containers"].append(
            {
                "name": "sidecar",
                "image": "envoyproxy/envoy:v1.31.0",
                "ports": [{"containerPort": 15001}],
                "securityContext": dict(container.get("securityContext") or {}),
            }
        )
    return spec


def _running_pod(
    namespace: str, name: str, template: dict[str, Any], rng: random.Random
) -> dict[str, Any]:
    spec = copy.deepcopy(template["spec"])
    spec["nodeName"] = f"node-{rng.randrange(20)}"
    spec["tolerations"] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
    ]
    if spec.get("automountServiceAccountToken") is not False:
        spec["volumes"].append(
            {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {}}]}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **_meta(name, rng, namespace, **template["metadata"]["labels"]),
            # As the ReplicaSet controller writes it: the engine rolls pod checks up to it.
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": name.rsplit("-", 1)[0],
                    "controller": True,
                }
            ],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _service(
    namespace: str, name: str, labels: dict[str, str], rng: random.Random
) -> dict[str, Any]:
    kind = rng.choices(("ClusterIP", "NodePort", "LoadBalancer"), (0.85, 0.08, 0.07))[0]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, rng, namespace, **labels),
        "spec": {
            "type": kind,
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def _role_and_binding(
    namespace: str, name: str, profile: str, rng: random.Random
) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    ]
    if profile == "legacy":
        rules.append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    elif rng.random() < 0.3:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, rng, namespace),
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, rng, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    return [role, binding]


def _network_policy(namespace: str, name: str) -> dict[str, Any]:
    rng = random.Random(f"{namespace}/{name}")  # noqa: S311 - test data
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, rng, namespace),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def _cluster_rbac(rng: random.Random) -> list[dict[str, Any]]:
    group = "rbac.authorization.k8s.io"
    admin_rules = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    view_rules = [{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["get", "list"]}]
    out: list[dict[str, Any]] = []
    for name, rules in (("cluster-admin", admin_rules), ("view", view_rules)):
        out.append(
            {
                "apiVersion": f"{group}/v1",
                "kind": "ClusterRole",
                "metadata": _meta(name, rng),
                "rules": rules,
            }
        )
    for name, role, subject in (
        ("cluster-admin", "cluster-admin", ("Group", "system:masters")),
        ("ops-admin", "cluster-admin", ("User", "ops@example.com")),
        ("viewers", "view", ("Group", "developers")),
    ):
        out.append(
            {
                "apiVersion": f"{group}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": _meta(name, rng),
                "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": group, "kind": subject[0], "name": subject[1]}],
            }
        )
    return out
