"""Putting the load on the clusters: the initial objects, the timed churn, and the cleanup.

The churn is open-loop: one write is due every ``1 / rate`` seconds whatever the apiserver's
speed, with at most ``concurrency`` writes in flight per cluster. A due write that finds no
free slot is dropped and counted, so a slow cluster shows up as a lower achieved rate rather
than as a burst of late writes that would distort the latencies.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence

from kposture.cli.benching import churning, kubewriting, workload

log = logging.getLogger(__name__)

_CREATE_CONCURRENCY = 16  # per cluster, while creating the initial objects
_KEEP_ERRORS = 5  # error messages kept in the report per cluster


@dataclasses.dataclass(frozen=True)
class Sample:
    """A violating write: the object, the version it produced, and when it was sent."""

    cluster: str
    uid: str
    violation: workload.Violation
    resource_version: int
    at: float  # epoch seconds, just before the request
    enforce: bool  # in the enforce namespace: the remediator should fix it
    acknowledged_at: float = 0.0  # epoch seconds, when the apiserver's answer arrived


@dataclasses.dataclass
class ChurnStats:
    """What one cluster's churn did."""

    writes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    error_messages: list[str] = dataclasses.field(default_factory=list)
    dropped: int = 0  # due writes skipped because ``concurrency`` writes were in flight
    write_seconds: list[float] = dataclasses.field(default_factory=list)
    samples: list[Sample] = dataclasses.field(default_factory=list)


async def create_all(
    writer: kubewriting.ClusterWriter, manifests: Sequence[workload.Manifest]
) -> dict[tuple[str, str, str], str]:
    """Create ``manifests`` in order, one kind at a time; their uids by (kind, namespace, name)."""
    uids: dict[tuple[str, str, str], str] = {}
    gate = asyncio.Semaphore(_CREATE_CONCURRENCY)

    async def create(manifest: workload.Manifest) -> None:
        async with gate:
            written = await writer.create(manifest)
        meta = manifest["metadata"]
        uids[(manifest["kind"], meta.get("namespace", ""), meta["name"])] = written.uid

    # Kinds in order (namespaces before what they hold), objects of one kind concurrently.
    for _, group in itertools.groupby(manifests, key=lambda m: m["kind"]):
        async with asyncio.TaskGroup() as tasks:
            for manifest in group:
                tasks.create_task(create(manifest))
    return uids


async def churn(
    writer: kubewriting.ClusterWriter,
    plan: churning.Churn,
    *,
    uids: dict[tuple[str, str, str], str],
    enforce: Sequence[str],
    enforce_namespace: str,
    rate: float,
    duration_s: float,
    concurrency: int,
) -> ChurnStats:
    """Write for ``duration_s`` at ``rate`` writes per second; see the module docstring.

    Each Deployment named in ``enforce`` is broken (made privileged) once, at evenly spaced
    times in the run, so the remediator's throttle and canary see a steady trickle rather than
    a burst and the remediation latency measures the pipeline, not the queue.
    """
    stats = ChurnStats()
    busy: set[tuple[str, str, str]] = set()
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    spacing = duration_s / (len(enforce) + 1)
    breaks = collections.deque((start + spacing * (i + 1), name) for i, name in enumerate(enforce))

    async def send(write: churning.Write, *, enforced: bool) -> None:
        key = (write.kind, write.namespace, write.name)
        try:
            written = await writer.patch(
                write.kind,
                namespace=write.namespace,
                name=write.name,
                patch=write.patch,
                status=write.status,
            )
        except kubewriting.KubeWriteError as exc:
            stats.errors[write.op] += 1
            if len(stats.error_messages) < _KEEP_ERRORS:
                stats.error_messages.append(str(exc))
            if not enforced:
                plan.failed(write)
            return
        finally:
            busy.discard(key)
            gate.release()
        stats.writes[write.op] += 1
        stats.write_seconds.append(written.duration_s)
        sampled = write.op == "violating" and written.resource_version.isdigit()
        if sampled and write.violation is not None:
            stats.samples.append(
                Sample(
                    cluster=writer.name,
                    uid=uids.get(key, written.uid),
                    violation=write.violation,
                    resource_version=int(written.resource_version),
                    at=written.at,
                    enforce=enforced,
                    acknowledged_at=written.at + written.duration_s,
                )
            )

    async with asyncio.TaskGroup() as tasks:
        for tick in itertools.count():
            due = start + tick / rate
            if due >= start + duration_s:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            enforced = bool(breaks) and breaks[0][0] <= time.monotonic()
            if enforced:
                _, name = breaks.popleft()
                patch = churning.violation_patch(
                    workload.Violation.PRIVILEGED, [workload.ENFORCE_CONTAINER], on=True
                )
                write: churning.Write | None = churning.Write(
                    "violating",
                    "Deployment",
                    enforce_namespace,
                    name,
                    patch,
                    violation=workload.Violation.PRIVILEGED,
                )
            else:
                write = plan.next(busy)
            if write is None:
                continue
            if gate.locked():
                stats.dropped += 1
                if enforced:
                    breaks.appendleft((time.monotonic(), write.name))  # retried next tick
                else:
                    plan.failed(write)
                continue
            await gate.acquire()
            busy.add((write.kind, write.namespace, write.name))
            tasks.create_task(send(write, enforced=enforced))
    return stats


async def clean_up(writer: kubewriting.ClusterWriter, *, run_id: str) -> list[str]:
    """Delete everything the run created on one cluster; what could not be deleted."""
    selector = f"{workload.RUN_LABEL}={run_id}"
    problems = []
    # Namespaces take their objects (and the Pods the controllers made) with them.
    for kind in ("Namespace", "ClusterRoleBinding", "ClusterRole"):
        try:
            for name in await writer.names(kind, label_selector=selector):
                await writer.delete(kind, name=name)
        except (kubewriting.KubeWriteError, OSError) as exc:
            problems.append(f"{writer.name}: {kind}: {exc}")
    return problems
