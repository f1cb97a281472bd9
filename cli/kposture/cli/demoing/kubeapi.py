"""A small REST adapter for the demo's own writes: create, read, patch, delete, list.

The demo writes the way people do, imperatively (create and strategic-merge patch under the
field manager ``kposture-demo``), not with server-side apply: the remediator may take over a
field that only imperative writers own, whereas a field declared by another *apply* manager is
escalated rather than fixed, which is not what the demo's drift is meant to show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes_asyncio import client

from kposture.runtime import kube
from kposture.runtime import settings as settings_mod

FIELD_MANAGER = "kposture-demo"

PLURALS: Mapping[str, str] = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Deployment": "deployments",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "NetworkPolicy": "networkpolicies",
}
"""The resource name of every kind the demo writes (fixed, so no discovery round trip)."""

API_VERSIONS: Mapping[str, str] = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Deployment": "apps/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}


class KubeError(RuntimeError):
    """The apiserver refused a demo write; the message names the object and the reason."""

    retriable = False


def path_of(kind: str, *, namespace: str = "", name: str = "") -> str:
    """The REST path of an object (or of its collection when ``name`` is empty)."""
    api_version = API_VERSIONS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{PLURALS[kind]}"
    return f"{base}/{name}" if name else base


class Cluster:
    """One cluster's apiserver, as the demo's user sees it."""

    def __init__(self, name: str, api: client.ApiClient) -> None:
        self.name = name
        self._api = api

    @classmethod
    async def connect(cls, settings: settings_mod.ClusterSettings) -> Cluster:
        """A client for the kubeconfig context of ``settings``."""
        return cls(settings.name, await kube.api_client(settings))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        found = await self._api.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return dict(found or {})

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``manifest``; :class:`KubeError` if the apiserver refuses it."""
        meta = manifest["metadata"]
        path = path_of(manifest["kind"], namespace=meta.get("namespace", ""))
        try:
            return await self._call(
                "POST", path, body=dict(manifest), query=[("fieldManager", FIELD_MANAGER)]
            )
        except client.ApiException as exc:
            raise _error(exc, manifest["kind"], meta) from exc

    async def get(self, kind: str, *, namespace: str = "", name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            return await self._call("GET", path_of(kind, namespace=namespace, name=name))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc, kind, {"namespace": namespace, "name": name}) from exc

    async def patch(
        self, kind: str, *, namespace: str = "", name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A strategic-merge patch, as ``kubectl patch`` sends it."""
        try:
            return await self._call(
                "PATCH",
                path_of(kind, namespace=namespace, name=name),
                body=dict(patch),
                query=[("fieldManager", FIELD_MANAGER)],
                content_type="application/strategic-merge-patch+json",
            )
        except client.ApiException as exc:
            raise _error(exc, kind, {"namespace": namespace, "name": name}) from exc

    async def delete(self, kind: str, *, namespace: str = "", name: str) -> None:
        """Delete an object in the background; a missing one is fine."""
        try:
            await self._call(
                "DELETE",
                path_of(kind, namespace=namespace, name=name),
                query=[("propagationPolicy", "Background")],
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise _error(exc, kind, {"namespace": namespace, "name": name}) from exc

    async def list_all(self, kind: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        """Every object of ``kind`` in the cluster that matches ``label_selector``."""
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self._call("GET", path_of(kind), query=query)
        return [dict(item) for item in found.get("items") or ()]

    async def wait_available(
        self, deployments: Sequence[tuple[str, str]], *, timeout_s: float
    ) -> list[str]:
        """Wait until each ``(namespace, name)`` Deployment is rolled out; the ones that are not."""
        deadline = time.monotonic() + timeout_s
        waiting = list(deployments)
        while waiting and time.monotonic() < deadline:
            still = []
            for namespace, name in waiting:
                found = await self.get("Deployment", namespace=namespace, name=name)
                if found is None or not rolled_out(found):
                    still.append((namespace, name))
            waiting = still
            if waiting:
                await asyncio.sleep(0.5)
        return [f"{namespace}/{name}" for namespace, name in waiting]


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """True when every replica runs the current template and is available."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = spec.get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= meta.get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


def _error(exc: client.ApiException, kind: str, meta: Mapping[str, Any]) -> KubeError:
    where = "/".join(p for p in (meta.get("namespace", ""), kind, meta.get("name", "")) if p)
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    return KubeError(f"{where}: HTTP {exc.status}: {exc.reason}: {body[:300]}")
