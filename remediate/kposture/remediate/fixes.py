"""The catalogue of mechanical fixes, keyed by check id (pure: no I/O).

A finding does not carry its patch, and the baselines that define fixes live in the evaluate
service, which remediate must not import. So this module is remediate's own copy of the fixes
that are mechanical: each knows how to compute the change for one object (``build``) and how to
tell that the change holds (``holds``), which is what verification re-checks after the write.
The ids are those of the built-in baselines (``evaluate/kposture/evaluate/builtin/*.yaml``);
``aliases`` maps the CIS and NSA ids of the same checks onto them.

Scopes: a ``POD_SPEC`` fix works on a pod spec and is moved under the template of the real
object by ``planning``; an ``OBJECT`` fix patches the object itself; a ``NAMESPACE`` fix creates
a new object in the finding's namespace.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kposture.schemas import findings

Risk = findings.Risk
_CONTAINER_LISTS = ("containers", "initContainers")  # ephemeral ones are not in templates
DEFAULT_DENY_NAME = "kposture-default-deny"


class Scope(enum.StrEnum):
    """What a fix's ``build`` receives and what its patch describes."""

    POD_SPEC = "pod-spec"  # a pod spec; planning re-roots the patch under the pod template
    OBJECT = "object"  # the whole object; the patch is a partial of the same object
    NAMESPACE = "namespace"  # the Namespace; the patch is a new object inside it


@dataclasses.dataclass(frozen=True)
class Fix:
    """One mechanical fix.

    ``build`` returns the partial content to apply (a pod spec partial for ``POD_SPEC``, an
    object partial otherwise), or None when there is nothing to change. ``holds`` is true when
    the input already satisfies the fix, and is what verification re-checks after the write.
    ``removes_permissions`` marks fixes that take rights away from a subject, so that policy
    asks for an approval when the subject is an automation account.
    """

    check: str
    risk: Risk
    scope: Scope
    description: str
    build: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    holds: Callable[[Mapping[str, Any]], bool]
    kinds: frozenset[str] = frozenset()  # for OBJECT and NAMESPACE scopes: the kinds it fixes
    removes_permissions: bool = False
    also_pod_spec: bool = False  # an OBJECT fix whose field also exists in pod specs


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for list_name in _CONTAINER_LISTS:
        for container in spec.get(list_name) or ():
            if isinstance(container, Mapping) and container.get("name"):
                yield list_name, container


def _security(container: Mapping[str, Any]) -> Mapping[str, Any]:
    value = container.get("securityContext")
    return value if isinstance(value, Mapping) else {}


def _per_container(
    bad: Callable[[Mapping[str, Any]], bool], security: dict[str, Any]
) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
    """A builder that sets ``security`` in the securityContext of every container it flags."""

    def build(spec: Mapping[str, Any]) -> dict[str, Any] | None:
        patch: dict[str, Any] = {}
        for list_name, container in _containers(spec):
            if bad(container):
                entry = {"name": container["name"], "securityContext": dict(security)}
                patch.setdefault(list_name, []).append(entry)
        return patch or None

    return build


def _holds_per_container(
    bad: Callable[[Mapping[str, Any]], bool],
) -> Callable[[Mapping[str, Any]], bool]:
    return lambda spec: not any(bad(c) for _, c in _containers(spec))


def _privileged(container: Mapping[str, Any]) -> bool:
    return _security(container).get("privileged") is True


def _may_escalate(container: Mapping[str, Any]) -> bool:
    return _security(container).get("allowPrivilegeEscalation") is not False


def _keeps_capabilities(container: Mapping[str, Any]) -> bool:
    capabilities = _security(container).get("capabilities") or {}
    return "ALL" not in (capabilities.get("drop") or [])


def _seccomp_type(holder: Mapping[str, Any]) -> str | None:
    profile = _security(holder).get("seccompProfile") or {}
    value = profile.get("type")
    return value if isinstance(value, str) else None


def _unconfined(container: Mapping[str, Any]) -> bool:
    return _seccomp_type(container) == "Unconfined"


def _seccomp_build(*, restricted: bool) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
    def build(spec: Mapping[str, Any]) -> dict[str, Any] | None:
        patch = _per_container(_unconfined, {"seccompProfile": {"type": "RuntimeDefault"}})(spec)
        patch = patch or {}
        pod_type = _seccomp_type(spec)
        # Restricted wants a profile at pod level (or on every container); setting it once on
        # the pod covers containers that set none. Baseline only forbids Unconfined.
        if pod_type == "Unconfined" or (
            restricted and pod_type not in ("RuntimeDefault", "Localhost")
        ):
            patch["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
        return patch or None

    return build


def _seccomp_holds(*, restricted: bool) -> Callable[[Mapping[str, Any]], bool]:
    def holds(spec: Mapping[str, Any]) -> bool:
        pod_type = _seccomp_type(spec)
        if any(_unconfined(c) for _, c in _containers(spec)) or pod_type == "Unconfined":
            return False
        return not restricted or pod_type in ("RuntimeDefault", "Localhost")

    return holds


def _host_namespaces_build(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    keys = ("hostNetwork", "hostPID", "hostIPC")
    return {key: False for key in keys if spec.get(key) is True} or None


def _host_namespaces_holds(spec: Mapping[str, Any]) -> bool:
    return _host_namespaces_build(spec) is None


def _run_as_non_root_build(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    if _security(spec).get("runAsNonRoot") is True:
        return None
    return {"securityContext": {"runAsNonRoot": True}}


def _automount_build(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    # Same field name on a ServiceAccount (top level) and in a pod spec.
    return (
        None
        if obj.get("automountServiceAccountToken") is False
        else {"automountServiceAccountToken": False}
    )


def _default_deny_build(namespace: Mapping[str, Any]) -> dict[str, Any] | None:
    name = (namespace.get("metadata") or {}).get("name")
    if not name:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_DENY_NAME, "namespace": name},
        # An empty podSelector selects every pod; listing both types with no rules denies all.
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


CLUSTER_ADMIN = "cluster-admin"
_KEPT_SUBJECTS = frozenset({("Group", "system:masters")})


def _is_cluster_admin_binding(obj: Mapping[str, Any]) -> bool:
    role = obj.get("roleRef") or {}
    return role.get("kind") == "ClusterRole" and role.get("name") == CLUSTER_ADMIN


def _admin_subjects_build(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if not _is_cluster_admin_binding(obj):
        return None
    subjects = [s for s in obj.get("subjects") or () if isinstance(s, Mapping)]
    kept = [s for s in subjects if (s.get("kind"), s.get("name")) in _KEPT_SUBJECTS]
    if len(kept) == len(subjects):
        return None
    # subjects is an atomic list: the apply replaces it whole, with only the kept entries.
    return {"subjects": [dict(s) for s in kept]}


def _admin_subjects_holds(obj: Mapping[str, Any]) -> bool:
    return _admin_subjects_build(obj) is None


def _pod_fix(
    check: str,
    bad: Callable[[Mapping[str, Any]], bool],
    security: dict[str, Any],
    description: str,
) -> Fix:
    return Fix(
        check=check,
        risk=Risk.DISRUPTIVE,  # a pod-template change restarts pods
        scope=Scope.POD_SPEC,
        description=description,
        build=_per_container(bad, security),
        holds=_holds_per_container(bad),
    )


CATALOGUE: Mapping[str, Fix] = {
    fix.check: fix
    for fix in (
        _pod_fix(
            "privileged",
            _privileged,
            {"privileged": False},
            "Set securityContext.privileged to false on the offending containers.",
        ),
        _pod_fix(
            "allowPrivilegeEscalation",
            _may_escalate,
            {"allowPrivilegeEscalation": False},
            "Set securityContext.allowPrivilegeEscalation to false on the containers.",
        ),
        _pod_fix(
            "readOnlyRootFilesystem",
            lambda c: _security(c).get("readOnlyRootFilesystem") is not True,
            {"readOnlyRootFilesystem": True},
            "Mount the containers' root filesystems read-only.",
        ),
        _pod_fix(
            "capabilities_restricted",
            _keeps_capabilities,
            {"capabilities": {"drop": ["ALL"]}},
            "Drop all capabilities on the containers.",
        ),
        Fix(
            "seccompProfile_restricted",
            Risk.DISRUPTIVE,
            Scope.POD_SPEC,
            "Use the runtime's default seccomp profile for the pod.",
            _seccomp_build(restricted=True),
            _seccomp_holds(restricted=True),
        ),
        Fix(
            "seccompProfile_baseline",
            Risk.DISRUPTIVE,
            Scope.POD_SPEC,
            "Replace Unconfined seccomp profiles with RuntimeDefault.",
            _seccomp_build(restricted=False),
            _seccomp_holds(restricted=False),
        ),
        Fix(
            "hostNamespaces",
            Risk.DISRUPTIVE,
            Scope.POD_SPEC,
            "Run the pod in its own network, PID and IPC namespaces.",
            _host_namespaces_build,
            _host_namespaces_holds,
        ),
        Fix(
            "runAsNonRoot",
            Risk.NEEDS_APPROVAL,  # images that run as root stop starting
            Scope.POD_SPEC,
            "Set runAsNonRoot on the pod.",
            _run_as_non_root_build,
            lambda spec: _run_as_non_root_build(spec) is None,
        ),
        Fix(
            "automountServiceAccountToken",
            Risk.SAFE,  # on a ServiceAccount it restarts nothing; planning raises it for pods
            Scope.OBJECT,
            "Do not mount the service-account token automatically.",
            _automount_build,
            lambda obj: obj.get("automountServiceAccountToken") is False,
            kinds=frozenset({"ServiceAccount"}),
            also_pod_spec=True,
        ),
        Fix(
            "defaultDenyNetworkPolicy",
            Risk.NEEDS_APPROVAL,  # denies all traffic to and from the namespace's pods
            Scope.NAMESPACE,
            f"Create the NetworkPolicy {DEFAULT_DENY_NAME} that denies all traffic.",
            _default_deny_build,
            lambda np: (np.get("spec") or {}).get("policyTypes") == ["Ingress", "Egress"],
            kinds=frozenset({"Namespace"}),
        ),
        Fix(
            "clusterAdminBinding",
            Risk.NEEDS_APPROVAL,  # RBAC: a human approves every loss of rights
            Scope.OBJECT,
            "Remove every subject but system:masters from the cluster-admin binding.",
            _admin_subjects_build,
            _admin_subjects_holds,
            kinds=frozenset({"ClusterRoleBinding"}),
            removes_permissions=True,
        ),
    )
}
"""Every mechanical fix, by its canonical check id."""

ALIASES: Mapping[str, str] = {
    # The ids of the same fixes in evaluate's cis-1.12 and nsa-cisa-1.2 built-in baselines.
    "privilegedContainers": "privileged",
    "noPrivileged": "privileged",
    "noPrivilegeEscalation": "allowPrivilegeEscalation",
    "capabilitiesDropAll": "capabilities_restricted",
    "dropCapabilities": "capabilities_restricted",
    "seccompRuntimeDefault": "seccompProfile_restricted",
    "seccompProfile": "seccompProfile_restricted",
    "defaultServiceAccountToken": "automountServiceAccountToken",
    "podServiceAccountToken": "automountServiceAccountToken",
    "serviceAccountToken": "automountServiceAccountToken",
    "namespaceNetworkPolicy": "defaultDenyNetworkPolicy",
    "nonRoot": "runAsNonRoot",
}
"""Check ids of other baselines that name the same fix as a catalogue entry."""


def lookup(check: str) -> Fix | None:
    """The fix of ``check`` (a catalogue id or an alias), or None when it has none."""
    return CATALOGUE.get(check) or CATALOGUE.get(ALIASES.get(check, ""))
