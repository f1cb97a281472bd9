"""Fakes for the remediator's ports (cluster, ledger, auditor, clock) and object builders.

The fake cluster applies patches the way server-side apply merges them (maps merged, containers
merged by name, other lists replaced), checks uid/resourceVersion preconditions and reports a
conflict when a changed field is owned by another manager. The integration tests run the same
scenarios against a real apiserver.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from kposture.remediate import errors, fields, planning, recording
from kposture.schemas import audit, common, findings, remediation

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    """A monotonic clock that only moves when told to (or when someone sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, Mapping):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v, k)
        return out
    if key in fields.MERGE_KEYED_LISTS and isinstance(base, list) and isinstance(patch, list):
        out_list = [dict(i) for i in base]
        for item in patch:
            match = next((i for i in out_list if i.get("name") == item["name"]), None)
            if match is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[out_list.index(match)] = _merge(match, item)
        return out_list
    return copy.deepcopy(patch)


class FakeKube:
    """An in-memory cluster. ``owners`` maps a rendered path to the manager that owns it."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.owners: dict[str, str] = {}
        self.writes: list[tuple[str, Any]] = []
        self.dry_runs = 0
        self._version = 100
        for obj in objects:
            self.put(obj)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as a new version (as if another client wrote it)."""
        self._version += 1
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("generation", 1)
        self.objects[self._key(planning.ref_of(obj))] = obj
        return obj

    @staticmethod
    def _key(ref: common.ObjectRef) -> tuple[str, str, str]:
        return (ref.kind, ref.namespace, ref.name)

    async def get(self, ref: common.ObjectRef) -> dict[str, Any] | None:
        found = self.objects.get(self._key(ref))
        return copy.deepcopy(found) if found is not None else None

    async def apply(self, patch: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        ref = planning.ref_of(patch)
        current = self.objects.get(self._key(ref))
        if current is not None:
            meta = current["metadata"]
            if ref.uid and ref.uid != meta["uid"]:
                raise errors.ObjectGoneError("uid precondition failed", status=409)
            if ref.resource_version and ref.resource_version != meta["resourceVersion"]:
                raise errors.StaleObjectError("resourceVersion precondition failed", status=409)
            for path, value in fields.leaves(patch):
                owner = self.owners.get(fields.render(path))
                if owner and fields.get(current, path) != (True, value):
                    raise errors.FieldConflictError(
                        f'conflict with "{owner}"', managers=[owner], fields=[fields.render(path)]
                    )
        merged = _merge(current or {}, dict(patch.items()))
        merged["metadata"].pop("resourceVersion", None)
        if dry_run:
            self.dry_runs += 1
            return merged
        self.writes.append(("apply", copy.deepcopy(patch)))
        generation = (current or {}).get("metadata", {}).get("generation", 0)
        merged["metadata"]["generation"] = generation + 1
        return self.put(merged)

    async def json_patch(
        self, ref: common.ObjectRef, ops: Sequence[Mapping[str, Any]], *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(self.objects[self._key(ref)])
        for op in ops:
            *parents, last = [
                p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
            ]
            node: Any = obj
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if op["op"] == "test" and node[last] != op["value"]:
                raise errors.StaleObjectError("test operation failed", status=422)
            if op["op"] in ("replace", "add"):
                node[last] = op["value"]
            elif op["op"] == "remove":
                del node[last]
        if dry_run:
            self.dry_runs += 1
            return obj
        self.writes.append(("json-patch", list(ops)))
        return self.put(obj)

    async def delete(self, ref: common.ObjectRef, *, dry_run: bool) -> None:
        if dry_run:
            self.dry_runs += 1
            return
        self.writes.append(("delete", ref))
        del self.objects[self._key(ref)]


class FakeLedger:
    """The ledger port without Kafka."""

    def __init__(self) -> None:
        self.ledger = recording.Ledger()
        self.history: list[remediation.RemediationAction] = []

    async def record(self, action: remediation.RemediationAction) -> None:
        self.history.append(action)
        self.ledger.put(action.key, action)


class FakeAuditor:
    """The audit sink without Kafka: seals into an in-memory chain."""

    def __init__(self) -> None:
        self.events: list[audit.AuditEvent] = []

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        sealed = audit.seal(event, previous=self.events[-1] if self.events else None)
        self.events.append(sealed)
        return sealed

    def actions(self) -> list[str]:
        return [str(e.action) for e in self.events]


def deployment(
    name: str = "web",
    *,
    namespace: str = "shop",
    security: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment with one container ``app`` and the given container securityContext."""
    container: dict[str, Any] = {"name": "app", "image": "registry.k8s.io/pause:3.10"}
    if security is not None:
        container["securityContext"] = security
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def namespace(name: str = "shop", *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Namespace with labels."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }


def finding_for(
    obj: Mapping[str, Any],
    *,
    check: str = "privileged",
    baseline: str = "pss-baseline",
    result: common.Result = common.Result.FAIL,
    state: findings.Transition = findings.Transition.OPENED,
    risk: findings.Risk | None = findings.Risk.DISRUPTIVE,
    cluster: str = "c1",
) -> findings.Finding:
    """A failing finding of ``check`` about ``obj`` as it is now."""
    return findings.Finding(
        cluster=cluster,
        ref=planning.ref_of(obj),
        baseline=baseline,
        baseline_version="v1.37",
        check=check,
        title=check,
        controls=[f"pss:baseline/{check}"],
        severity=common.Severity.CRITICAL,
        result=result,
        state=state,
        message="bad",
        path="spec.containers[*].securityContext.privileged",
        first_seen=NOW,
        observed_at=NOW,
        detected_at=NOW,
        remediation=findings.Remediation(available=True, risk=risk),
    )
