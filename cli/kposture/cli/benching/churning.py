"""The churn: which write comes next on one cluster, and what the objects look like after it.

A mix of the writes a cluster really sees, chosen at random but reproducibly (pure):

* ``violating`` -- a Deployment's template turns ``privileged`` or ``hostNetwork`` on; these are
  the detection samples, timed from the write to the finding;
* ``resolving`` -- the same setting turned off again, so the next violation opens a new finding;
* ``changed`` -- an edit no check cares about (an image tag, a ConfigMap's data, an annotation);
* ``unchanged`` -- a re-apply of what is already there (the apiserver emits no event);
* ``status`` -- a status-only update (a load balancer address, a condition), which ingest
  passes on and evaluate must skip cheaply.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection, Sequence
from typing import Any

from kposture.cli.benching import workload

Manifest = workload.Manifest
Violation = workload.Violation

_EPOCH_TIME = "2025-01-01T00:00:00Z"  # conditions need a transition time; any fixed one does

MIX = (
    ("violating", 0.15),
    ("resolving", 0.10),
    ("changed", 0.35),
    ("unchanged", 0.20),
    ("status", 0.20),
)
"""The default share of each kind of write in the churn."""


@dataclasses.dataclass(frozen=True)
class Write:
    """One write of the churn: a strategic-merge patch of one object (or of its status)."""

    op: str  # one of the names in MIX
    kind: str
    namespace: str
    name: str
    patch: Manifest
    status: bool = False  # patch the status subresource
    # What a violating write turns on (a detection sample) or a resolving one turns off.
    violation: Violation | None = None


@dataclasses.dataclass
class _Workload:
    """A Deployment's security-relevant state as the churn has written it."""

    namespace: str
    name: str
    containers: list[str]
    on: set[Violation]


class Churn:
    """Chooses the next write for one cluster and keeps track of what it has written.

    ``next`` never picks an object in ``busy`` (a write to it is still in flight), so the
    tracked state is always the state the apiserver will end up with.
    """

    def __init__(
        self,
        manifests: Sequence[Manifest],
        *,
        seed: int,
        mix: Sequence[tuple[str, float]] = MIX,
    ) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
        self._mix = list(mix)
        self._counter = 0
        self.workloads = [_workload(m) for m in manifests if m["kind"] == "Deployment"]
        self.objects = [m for m in manifests if "namespace" in m["metadata"]]
        self.services = [m for m in self.objects if m["kind"] == "Service"]

    def next(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        """The next write, or None when every candidate object is busy."""
        self._counter += 1
        ops = [name for name, _ in self._mix]
        weights = [weight for _, weight in self._mix]
        for _ in range(8):  # another op when this one has no free candidate
            op = self._rng.choices(ops, weights)[0]
            write = getattr(self, f"_{op}")(busy)
            if write is not None:
                return write  # type: ignore[no-any-return]
        return None

    def failed(self, write: Write) -> None:
        """Forget ``write``, which was not sent or was refused: the object kept its state."""
        if write.violation is None:
            return
        for tracked in self.workloads:
            if (tracked.namespace, tracked.name) == (write.namespace, write.name):
                if write.op == "violating":
                    tracked.on.discard(write.violation)
                else:
                    tracked.on.add(write.violation)

    def _free_workloads(self, busy: Collection[tuple[str, str, str]]) -> list[_Workload]:
        return [w for w in self.workloads if ("Deployment", w.namespace, w.name) not in busy]

    def _violating(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        candidates = [
            (w, v) for w in self._free_workloads(busy) for v in Violation if v not in w.on
        ]
        if not candidates:
            return None
        workload, violation = self._rng.choice(candidates)
        workload.on.add(violation)
        return Write(
            "violating",
            "Deployment",
            workload.namespace,
            workload.name,
            violation_patch(violation, workload.containers, on=True),
            violation=violation,
        )

    def _resolving(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        candidates = [(w, v) for w in self._free_workloads(busy) for v in w.on]
        if not candidates:
            return None
        workload, violation = self._rng.choice(candidates)
        workload.on.discard(violation)
        patch = violation_patch(violation, workload.containers, on=False)
        return Write(
            "resolving",
            "Deployment",
            workload.namespace,
            workload.name,
            patch,
            violation=violation,
        )

    def _changed(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        obj = self._free_object(busy)
        if obj is None:
            return None
        meta = obj["metadata"]
        kind = obj["kind"]
        if kind == "Deployment" and self._rng.random() < 0.5:
            # An image bump: the most common edit, and one that rolls the Pods out.
            container = obj["spec"]["template"]["spec"]["containers"][0]
            image = f"{container['image'].split(':')[0]}:{self._rng.randrange(1, 99)}.0"
            spec = {"containers": [{"name": container["name"], "image": image}]}
            patch: Manifest = {"spec": {"template": {"spec": spec}}}
        elif kind == "ConfigMap":
            patch = {"data": {"revision": str(self._counter)}}
        else:
            patch = {
                "metadata": {"annotations": {"deploy.example.com/revision": str(self._counter)}}
            }
        return Write("changed", kind, meta["namespace"], meta["name"], patch)

    def _unchanged(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        obj = self._free_object(busy)
        if obj is None:
            return None
        meta = obj["metadata"]
        # The labels it was created with: what a re-run of the same deploy pipeline sends.
        patch = {"metadata": {"labels": dict(meta.get("labels") or {})}}
        return Write("unchanged", obj["kind"], meta["namespace"], meta["name"], patch)

    def _status(self, busy: Collection[tuple[str, str, str]]) -> Write | None:
        free = [
            s
            for s in self.services
            if ("Service", s["metadata"]["namespace"], s["metadata"]["name"]) not in busy
        ]
        if not free:
            return None
        service = self._rng.choice(free)
        meta = service["metadata"]
        patch = _status_patch(service, self._counter)
        return Write("status", "Service", meta["namespace"], meta["name"], patch, status=True)

    def _free_object(self, busy: Collection[tuple[str, str, str]]) -> Manifest | None:
        for _ in range(8):
            obj = self._rng.choice(self.objects) if self.objects else None
            if obj is None:
                return None
            meta = obj["metadata"]
            if (obj["kind"], meta["namespace"], meta["name"]) not in busy:
                return obj
        return None


def _status_patch(service: Manifest, counter: int) -> Manifest:
    """What a controller would write to a Service's status: only status changes."""
    if service["spec"].get("type") == "LoadBalancer":
        # A cloud controller (re)assigning the address. TEST-NET-3: never routable.
        address = f"203.0.113.{counter % 250 + 1}"
        return {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}
    # Other Services only carry conditions, as set by health checkers and meshes.
    condition = {
        "type": "bench.example.com/Probed",
        "status": "True",
        "reason": "Probe",
        "message": f"probe {counter} succeeded",
        "lastTransitionTime": _EPOCH_TIME,
    }
    return {"status": {"conditions": [condition]}}


def violation_patch(violation: Violation, containers: Sequence[str], *, on: bool) -> Manifest:
    """The strategic-merge patch that turns ``violation`` on (or off) in a pod template."""
    if violation is Violation.HOST_NETWORK:
        return {"spec": {"template": {"spec": {"hostNetwork": on}}}}
    # The apiserver refuses privileged=true next to allowPrivilegeEscalation=false, so whoever
    # turns privileged on removes that setting too (null deletes it in a merge patch).
    security: dict[str, Any] = {"privileged": True, "allowPrivilegeEscalation": None}
    if not on:
        security = {"privileged": False}
    entries = [{"name": name, "securityContext": dict(security)} for name in containers]
    return {"spec": {"template": {"spec": {"containers": entries}}}}


def _workload(manifest: Manifest) -> _Workload:
    spec = manifest["spec"]["template"]["spec"]
    containers = spec.get("containers") or []
    on: set[Violation] = set()
    if any((c.get("securityContext") or {}).get("privileged") is True for c in containers):
        on.add(Violation.PRIVILEGED)
    if spec.get("hostNetwork") is True:
        on.add(Violation.HOST_NETWORK)
    meta = manifest["metadata"]
    return _Workload(meta["namespace"], meta["name"], [c["name"] for c in containers], on)
