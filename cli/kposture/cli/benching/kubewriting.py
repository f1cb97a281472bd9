"""Timed writes to one cluster's apiserver: the bench's client side of the detection latency.

Writes are imperative (create, strategic-merge patch) under the field manager
``kposture-bench``, the way ``kubectl`` and most deploy pipelines write: the remediator may
take over fields that only imperative writers own, whereas fields declared by another *apply*
manager are escalated, not fixed, and the remediation latency would measure nothing.

The write time is read from the wall clock just before the request leaves, because it is
compared with Kafka record timestamps, which are wall-clock milliseconds of the same host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Unpack

import orjson

from kposture.cli import localops
from kposture.cli.localops import path_of

FIELD_MANAGER = "kposture-bench"


class KubeWriteError(RuntimeError):
    """The apiserver refused a bench write; the message names the object and the reason."""

    retriable = False


@dataclasses.dataclass(frozen=True)
class Written:
    """One accepted write: when it left (epoch seconds), and the object version it made."""

    at: float
    uid: str
    resource_version: str
    duration_s: float  # the round trip, for the report's write statistics


class ClusterWriter(localops.ApiServer):
    """One cluster's apiserver, as the bench's writers see it."""

    async def _call(
        self, method: str, path: str, **request: Unpack[localops.Request]
    ) -> tuple[int, dict[str, Any]]:
        response = await self._call_api(method, path, {"_preload_content": False}, **request)
        try:
            raw = await response.read()
        finally:
            response.release()
        try:
            decoded = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            decoded = {"message": raw[:300].decode(errors="replace")}
        return response.status, decoded if isinstance(decoded, dict) else {}

    async def create(self, manifest: Mapping[str, Any]) -> Written:
        """Create ``manifest``; :class:`KubeWriteError` if the apiserver refuses it."""
        meta = manifest["metadata"]
        path = path_of(manifest["kind"], namespace=meta.get("namespace", ""))
        started, clock = time.time(), time.monotonic()
        status, body = await self._call(
            "POST", path, body=dict(manifest), query=[("fieldManager", FIELD_MANAGER)]
        )
        return _written(
            status, body, kind=manifest["kind"], meta=meta, started=started, clock=clock
        )

    async def patch(
        self,
        kind: str,
        *,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        status: bool = False,
    ) -> Written:
        """A strategic-merge patch of the object (or of its status), as ``kubectl patch`` sends."""
        path = path_of(kind, namespace=namespace, name=name) + ("/status" if status else "")
        started, clock = time.time(), time.monotonic()
        code, body = await self._call(
            "PATCH",
            path,
            body=dict(patch),
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/strategic-merge-patch+json",
        )
        where = {"namespace": namespace, "name": name}
        return _written(code, body, kind=kind, meta=where, started=started, clock=clock)

    async def delete(self, kind: str, *, namespace: str = "", name: str) -> None:
        """Delete an object in the background; a missing one is fine."""
        status, body = await self._call(
            "DELETE",
            path_of(kind, namespace=namespace, name=name),
            query=[("propagationPolicy", "Background")],
        )
        if status not in (200, 202, 404):
            raise _error(status, body, kind, {"namespace": namespace, "name": name})

    async def names(self, kind: str, *, label_selector: str) -> list[str]:
        """The names of the cluster-scoped objects of ``kind`` that match ``label_selector``."""
        status, body = await self._call(
            "GET", path_of(kind), query=[("labelSelector", label_selector)]
        )
        if status != 200:
            raise _error(status, body, kind, {"name": f"?labelSelector={label_selector}"})
        return [item["metadata"]["name"] for item in body.get("items") or ()]


def _written(
    status: int,
    body: Mapping[str, Any],
    *,
    kind: str,
    meta: Mapping[str, Any],
    started: float,
    clock: float,
) -> Written:
    if not 200 <= status < 300:
        raise _error(status, body, kind, meta)
    found = body.get("metadata") or {}
    return Written(
        at=started,
        uid=str(found.get("uid", "")),
        resource_version=str(found.get("resourceVersion", "")),
        duration_s=time.monotonic() - clock,
    )


def _error(status: int, body: Mapping[str, Any], kind: str, meta: Mapping[str, Any]) -> Exception:
    where = "/".join(p for p in (meta.get("namespace", ""), kind, meta.get("name", "")) if p)
    return KubeWriteError(f"{where}: HTTP {status}: {str(body.get('message', ''))[:300]}")
