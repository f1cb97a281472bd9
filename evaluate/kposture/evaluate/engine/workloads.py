"""Pod specs inside workloads: where each kind keeps its pod template, and the Pod-shaped view.

A ``podSpec`` check is written once against a Pod. For a Deployment (or any other controller)
the engine hands the check a Pod-shaped view of the template and translates what the check
reports (field paths, fix patches) back to the real object, as upstream Pod Security Admission
does for its workload warnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEMPLATE_PATHS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("", "PodTemplate"): ("template",),
    ("", "ReplicationController"): ("spec", "template"),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
"""(API group, kind) -> path of the pod template; ``()`` means the object is the Pod."""


def group_of(api_version: str) -> str:
    """The API group of ``apiVersion`` (``"apps/v1"`` -> ``"apps"``, ``"v1"`` -> ``""``)."""
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def pod_view(obj: Mapping[str, Any], template_path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The Pod a check sees for ``obj``, or ``None`` when the object has no pod template.

    The view's metadata is the template's, plus the object's namespace (templates rarely carry
    one, and checks such as "not in the default namespace" need it).
    """
    if not template_path:
        return obj
    template: Any = obj
    for key in template_path:
        template = template.get(key) if isinstance(template, Mapping) else None
    if not isinstance(template, Mapping):
        return None
    metadata = dict(template.get("metadata") or {})
    namespace = (obj.get("metadata") or {}).get("namespace")
    if namespace and "namespace" not in metadata:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec") or {},
    }


def real_path(view_path: str, template_path: tuple[str, ...]) -> str:
    """Translate a field path of the Pod view into the path in the real object."""
    if not template_path or not view_path:
        return view_path
    return ".".join(template_path) + "." + view_path


def real_field_path(path: tuple[str, ...], template_path: tuple[str, ...]) -> tuple[str, ...]:
    """Translate a CEL field path (``("object", "spec", ...)``) from the view to the object.

    ``apiVersion`` and ``kind`` of the view are constants, so nothing of the object is read;
    a path to the whole view reads the whole template.
    """
    if not template_path or not path or path[0] != "object":
        return path
    if len(path) == 1:
        return ("object", *template_path)
    if path[1] in ("apiVersion", "kind"):
        return ()
    if path[1:3] == ("metadata", "namespace"):
        return ("object", "metadata", "namespace")
    return ("object", *template_path, *path[1:])


def reroot(patch: Mapping[str, Any], template_path: tuple[str, ...]) -> dict[str, Any]:
    """Move a fix patch written against the Pod view under the object's pod template."""
    if not template_path:
        return dict(patch)
    nested: dict[str, Any] = {
        key: value for key, value in patch.items() if key in ("metadata", "spec")
    }
    for key in reversed(template_path):
        nested = {key: nested}
    return nested


def controlled_by_workload(obj: Mapping[str, Any]) -> bool:
    """Whether a workload kind that carries a pod template controls ``obj``.

    A Pod of a ReplicaSet, a ReplicaSet of a Deployment or a Job of a CronJob runs its
    controller's template: ``podSpec`` checks on it would repeat the controller's findings
    (several per rollout), so they run on the top-level controller only. A controller whose
    template is not evaluated (a Node owning a mirror Pod, a custom resource) does not count,
    or its pods would get no pod checks at all.
    """
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if type(reference) is not dict and not isinstance(reference, Mapping):
            continue
        if reference.get("controller") is not True:
            continue
        owner = (group_of(str(reference.get("apiVersion", ""))), str(reference.get("kind", "")))
        if owner in TEMPLATE_PATHS:
            return True
    return False
