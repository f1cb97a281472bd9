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
from typing import Any, Unpack

from kubernetes_asyncio import client

from kposture.cli import localops
from kposture.cli.localops import path_of

FIELD_MANAGER = "kposture-demo"


_READ_OBJECT: Mapping[str, Any] = {
    "response_types_map": {200: "object", 201: "object", 202: "object"},
    "_return_http_data_only": True,
}
"""How the demo reads answers: the decoded JSON object; an ApiException for any error status."""


class KubeError(RuntimeError):
    """The apiserver refused a demo write; the message names the object and the reason."""

    retriable = False


class Cluster(localops.ApiServer):
    """One cluster's apiserver, as the demo's user sees it."""

    async def _call(
        self, method: str, path: str, **request: Unpack[localops.Request]
    ) -> dict[str, Any]:
        found = await self._call_api(method, path, _READ_OBJECT, **request)
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
