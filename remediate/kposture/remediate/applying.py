"""Applying: the Kubernetes adapter (kubernetes_asyncio) -- dry run, apply, verify, roll back.

Every write is a server-side apply under the field manager ``kposture`` and never uses
``force``: a field owned by another manager comes back as a 409 with ``FieldManagerConflict``
causes, which we raise as :class:`errors.FieldConflictError` for the caller to escalate. The
apply configuration carries ``metadata.uid`` and ``metadata.resourceVersion``, which the
apiserver treats as preconditions, so a plan made from an older object fails with
:class:`errors.StaleObjectError` and is made again from the latest state. Rollbacks are JSON
Patches guarded by ``test`` operations, so they restore only what is still ours.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from kubernetes_asyncio import client

from kposture.remediate import errors, planning, verifying
from kposture.schemas import common

FIELD_MANAGER = planning.FIELD_MANAGER

PLURALS: Mapping[str, str] = {
    "Pod": "pods",
    "PodTemplate": "podtemplates",
    "ReplicationController": "replicationcontrollers",
    "ServiceAccount": "serviceaccounts",
    "Namespace": "namespaces",
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "NetworkPolicy": "networkpolicies",
    "ClusterRoleBinding": "clusterrolebindings",
    "RoleBinding": "rolebindings",
}
"""The resource name of each kind the remediator reads or writes (no discovery needed)."""

_CONFLICT_MANAGER_RE = re.compile(r'conflict with "([^"]+)"')


class Kube(Protocol):
    """What remediation needs from one cluster; :class:`KubeClient` is the real one."""

    async def get(self, ref: common.ObjectRef) -> dict[str, Any] | None: ...

    async def apply(self, patch: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]: ...

    async def json_patch(
        self, ref: common.ObjectRef, ops: Sequence[Mapping[str, Any]], *, dry_run: bool = False
    ) -> dict[str, Any]: ...

    async def delete(self, ref: common.ObjectRef, *, dry_run: bool) -> None: ...


def resource_path(ref: common.ObjectRef, *, name: bool = True) -> str:
    """The REST path of ``ref`` (or of its collection with ``name=False``)."""
    plural = PLURALS.get(ref.kind)
    if plural is None:
        raise errors.NoFixError(f"remediate does not write {ref.kind} objects")
    base = f"/api/{ref.api_version}" if "/" not in ref.api_version else f"/apis/{ref.api_version}"
    if ref.namespace:
        base += f"/namespaces/{ref.namespace}"
    base += f"/{plural}"
    return f"{base}/{ref.name}" if name else base


def _error(exc: client.ApiException, ref: common.ObjectRef) -> errors.ApplyError:
    """Our error for the apiserver's answer, its cause chained by the caller."""
    status = int(exc.status or 0)
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = str(body.get("message") or exc.reason or "")
    where = f"{ref.kind} {ref.subject}"
    if status == 404:
        return errors.ObjectGoneError(f"{where} is gone: {message}", status=status)
    if status == 409:
        causes = (body.get("details") or {}).get("causes") or []
        conflicts = [c for c in causes if c.get("reason") == "FieldManagerConflict"]
        if conflicts:
            managers = sorted(set(_CONFLICT_MANAGER_RE.findall(message)))
            fields_ = [str(c.get("field", "")) for c in conflicts]
            return errors.FieldConflictError(
                f"{where}: fields owned by {', '.join(managers) or 'other managers'}: {message}",
                managers=managers,
                fields=fields_,
            )
        if "UID" in message and "recondition" in message:
            return errors.ObjectGoneError(f"{where} was replaced: {message}", status=status)
        return errors.StaleObjectError(f"{where} changed since it was read: {message}", status=409)
    if 400 <= status < 500 and status != 429:
        return errors.RejectedError(f"{where}: HTTP {status}: {message}", status=status)
    return errors.ApplyError(f"{where}: HTTP {status}: {message}", status=status)


class KubeClient:
    """One cluster's apiserver, through an authenticated ``ApiClient``."""

    def __init__(self, api: client.ApiClient, *, field_manager: str = FIELD_MANAGER) -> None:
        self._api = api
        self.field_manager = field_manager

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        return await self._api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    async def get(self, ref: common.ObjectRef) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            found = await self._call("GET", resource_path(ref))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc, ref) from exc
        return dict(found)

    async def apply(self, patch: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        """Server-side apply of ``patch`` as ``kposture``, never forced; the resulting object."""
        ref = planning.ref_of(patch)
        query = [("fieldManager", self.field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            result = await self._call(
                "PATCH",
                resource_path(ref),
                query=query,
                body=dict(patch),
                content_type="application/apply-patch+yaml",
            )
        except client.ApiException as exc:
            raise _error(exc, ref) from exc
        return dict(result)

    async def json_patch(
        self, ref: common.ObjectRef, ops: Sequence[Mapping[str, Any]], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """A JSON Patch (RFC 6902) as ``kposture``; a failed ``test`` raises StaleObjectError."""
        query = [("fieldManager", self.field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            result = await self._call(
                "PATCH",
                resource_path(ref),
                query=query,
                body=[dict(op) for op in ops],
                content_type="application/json-patch+json",
            )
        except client.ApiException as exc:
            if exc.status == 422 and any(op.get("op") == "test" for op in ops):
                # A failed test answers 422 with a generic message: a guarded value changed.
                raise errors.StaleObjectError(
                    f"{ref.kind} {ref.subject}: a guarded value changed since it was read",
                    status=422,
                ) from exc
            raise _error(exc, ref) from exc
        return dict(result)

    async def delete(self, ref: common.ObjectRef, *, dry_run: bool) -> None:
        """Delete ``ref``, preconditioned on its uid and resourceVersion."""
        preconditions = {"uid": ref.uid}
        if ref.resource_version:
            preconditions["resourceVersion"] = ref.resource_version
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        body["preconditions"] = preconditions
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            await self._call("DELETE", resource_path(ref), body=body)
        except client.ApiException as exc:
            raise _error(exc, ref) from exc

    async def count(self, refs: Sequence[common.ObjectRef]) -> int:
        """How many objects the collections of ``refs`` hold (one cheap list call each)."""
        total = 0
        for ref in refs:
            try:
                page = await self._call(
                    "GET", resource_path(ref, name=False), query=[("limit", "1")]
                )
            except client.ApiException as exc:
                raise _error(exc, ref) from exc
            meta = page.get("metadata") or {}
            total += len(page.get("items") or ()) + int(meta.get("remainingItemCount") or 0)
        return total


def summarize_dry_run(plan: planning.Plan, result: Mapping[str, Any]) -> str:
    """A one-line result of a dry run for the audit event: does the fix hold on its result?"""
    new = (result.get("metadata") or {}).get("generation")
    change = "" if plan.generation in (None, new) else f"; generation {plan.generation} -> {new}"
    if not plan.target.uid:
        return f"accepted: {plan.target.kind} {plan.target.subject} would be created"
    if not verifying.fix_holds(plan.check, result):
        return f"accepted, but {plan.check} would still fail on the result{change}"
    return f"accepted: {plan.check} holds on the result{change}"


async def verify(kube: Kube, plan: planning.Plan) -> dict[str, Any]:
    """Re-read the plan's target and check that the fix holds; the object, or VerificationError."""
    current = await kube.get(plan.target)
    if current is None:
        raise errors.VerificationError(f"{plan.target.subject} vanished after the write")
    if not verifying.fix_holds(plan.check, current):
        raise errors.VerificationError(
            f"{plan.target.subject}: {plan.check} does not hold after the write (reverted?)"
        )
    return current


async def wait_healthy(
    kube: Kube,
    ref: common.ObjectRef,
    *,
    timeout_s: float,
    soak_s: float,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str:
    """Wait until the rollout of ``ref`` completes and stays healthy for ``soak_s``.

    Returns the last health message; raises :class:`errors.VerificationError` when the rollout
    fails, does not complete within ``timeout_s``, or regresses during the soak.
    """
    deadline = clock() + timeout_s
    healthy_since: float | None = None
    message = ""
    while True:
        obj = await kube.get(ref)
        if obj is None:
            raise errors.VerificationError(f"{ref.subject} vanished during its rollout")
        health, message = verifying.rollout(obj)
        now = clock()
        if health is verifying.Health.FAILED:
            raise errors.VerificationError(f"{ref.subject}: rollout failed: {message}")
        if health is verifying.Health.HEALTHY:
            healthy_since = now if healthy_since is None else healthy_since
            if now - healthy_since >= soak_s:
                return message
        elif healthy_since is not None:
            raise errors.VerificationError(f"{ref.subject}: health regressed: {message}")
        if now >= deadline:
            raise errors.VerificationError(
                f"{ref.subject}: rollout not healthy after {timeout_s:.0f}s: {message}"
            )
        await sleep(poll_s)


async def rollback(
    kube: Kube,
    ref: common.ObjectRef,
    *,
    pre_image: Mapping[str, Any],
    patch: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Restore the pre-image of an action on ``ref``; the restored object (None if deleted).

    Raises :class:`errors.RollbackError` when the fields changed since our write.
    """
    if pre_image.get("created"):
        await kube.delete(ref, dry_run=False)
        return None
    if "deleted" in pre_image:
        return await kube.apply(pre_image["deleted"], dry_run=False)
    current = await kube.get(ref)
    if current is None:
        raise errors.RollbackError(f"{ref.subject} no longer exists")
    if current.get("metadata", {}).get("uid") != ref.uid:
        raise errors.RollbackError(f"{ref.subject} was replaced since the action")
    try:
        ops = planning.rollback_ops(pre_image, patch, current)
        return await kube.json_patch(ref, ops)
    except (KeyError, errors.StaleObjectError) as exc:
        raise errors.RollbackError(
            f"{ref.subject}: the fields changed since our write; not rolled back: {exc}"
        ) from exc
