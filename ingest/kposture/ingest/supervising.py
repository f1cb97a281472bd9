"""One supervisor per cluster: connect, discover what the cluster serves, run its watchers.

A cluster that cannot be reached, refuses our credentials, or whose kubeconfig is broken is
retried with backoff forever; its state shows in ``/readyz`` (a non-critical check named
``cluster/<name>``, so one broken cluster never makes the whole service unready) and in the
``kposture_ingest_cluster_up`` and ``..._last_contact_timestamp_seconds`` metrics. Clusters are
independent: each supervisor runs in its own task and shares nothing but the buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NoReturn, Protocol

from kposture.ingest import kubeapi, reconciling, watching
from kposture.ingest import metrics as metrics_mod
from kposture.runtime import health, kube
from kposture.runtime import settings as settings_mod

log = logging.getLogger(__name__)

Memory = dict[str, dict[str, reconciling.Observed]]
"""What a cluster's watchers know, per kind (``str(KindRef)``) and uid."""


class ClusterApi(watching.KubeApi, Protocol):
    """A cluster's API that can be closed."""

    async def close(self) -> None:
        """Release its connections."""


Connect = Callable[[settings_mod.ClusterSettings], Awaitable[ClusterApi]]


class ClusterHealth:
    """Folds the reports of one cluster's watchers into its readiness check and metrics."""

    def __init__(
        self, cluster: str, *, readiness: health.Readiness, metrics: metrics_mod.Metrics
    ) -> None:
        self._cluster = cluster
        self._readiness = readiness
        self._metrics = metrics
        self._down: str | None = "connecting"
        self._failing: dict[str, str] = {}
        self._state: tuple[bool, str] | None = None
        self._publish()

    def connected(self) -> None:
        """Discovery succeeded."""
        self._down = None
        self._metrics.last_contact.labels(cluster=self._cluster).set_to_current_time()
        self._publish()

    def down(self, reason: str) -> None:
        """The cluster as a whole cannot be used (config, connection, credentials)."""
        self._down = reason
        self._publish()

    def contact(self, kind: str) -> None:
        """A watcher of ``kind`` got an answer."""
        self._metrics.last_contact.labels(cluster=self._cluster).set_to_current_time()
        if kind in self._failing:
            del self._failing[kind]
            self._publish()

    def failed(self, kind: str, reason: str) -> None:
        """A watcher of ``kind`` failed with ``reason``."""
        if self._failing.get(kind) != reason:
            self._failing[kind] = reason
            self._publish()

    def _publish(self) -> None:
        if self._down is not None:
            state = (False, self._down)
        elif self._failing:
            state = (False, ", ".join(f"{k}: {r}" for k, r in sorted(self._failing.items())))
        else:
            state = (True, "watching")
        if state == self._state:
            return
        self._state = state
        self._readiness.report(
            f"cluster/{self._cluster}", ok=state[0], detail=state[1], critical=False
        )
        self._metrics.cluster_up.labels(cluster=self._cluster).set(1 if state[0] else 0)


async def discover(
    api: watching.KubeApi, kinds: Sequence[watching.KindRef]
) -> tuple[list[watching.Resource], list[watching.KindRef]]:
    """Which of ``kinds`` the cluster serves (with list and watch), and which it does not."""
    by_group_version: dict[str, list[watching.KindRef]] = {}
    for ref in kinds:
        by_group_version.setdefault(ref.api_version, []).append(ref)
    served: list[watching.Resource] = []
    skipped: list[watching.KindRef] = []
    for group_version, refs in by_group_version.items():
        listing = await api.discover(group_version)
        index = {
            str(r.get("kind")): r
            for r in listing or ()
            if isinstance(r, dict) and "/" not in str(r.get("name", ""))  # not a subresource
        }
        for ref in refs:
            found = index.get(ref.kind)
            verbs = set(found.get("verbs") or ()) if found else set()
            if found and {"list", "watch"} <= verbs:
                served.append(watching.Resource(ref, str(found["name"])))
            else:
                skipped.append(ref)
    return served, skipped


async def supervise(
    cluster: settings_mod.ClusterSettings,
    *,
    kinds: Sequence[watching.KindRef],
    connect: Connect,
    sink: watching.Sink,
    settings: settings_mod.IngestSettings,
    metrics: metrics_mod.Metrics,
    readiness: health.Readiness,
    clock: watching.Clock,
    seed: Mapping[str, Mapping[str, reconciling.Observed]] | None = None,
) -> NoReturn:
    """Run one cluster's watchers until cancelled, reconnecting when the cluster fails."""
    cluster_health = ClusterHealth(cluster.name, readiness=readiness, metrics=metrics)
    backoff = reconciling.Backoff(
        initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s
    )
    memory: Memory = {kind: dict(objects) for kind, objects in (seed or {}).items()}
    reported_skips: set[watching.KindRef] = set()
    while True:
        api: ClusterApi | None = None
        try:
            api = await connect(cluster)
            served, skipped = await discover(api, kinds)
            for ref in skipped:
                metrics.kinds_skipped.labels(cluster=cluster.name, kind=ref.kind).set(1)
                if ref not in reported_skips:
                    reported_skips.add(ref)
                    log.info(
                        "kind not served, skipped",
                        extra={"cluster": cluster.name, "kind": str(ref)},
                    )
            cluster_health.connected()
            backoff.reset()
            if not served:
                await clock.sleep(settings.resync_interval_s)  # maybe the kinds appear later
                continue
            await _run_watchers(
                cluster.name,
                served,
                api=api,
                memory=memory,
                sink=sink,
                settings=settings,
                metrics=metrics,
                cluster_health=cluster_health,
                clock=clock,
            )
        except (kube.ClusterConfigError, kubeapi.KubeApiError) as exc:
            reason = exc.reason if isinstance(exc, kubeapi.KubeApiError) else "config"
            cluster_health.down(reason)
            delay = backoff.next_delay(retriable=exc.retriable)
            log.warning(
                "cluster unavailable, retrying",
                extra={
                    "cluster": cluster.name,
                    "reason": reason,
                    "error": str(exc),
                    "retry_in_s": delay,
                },
            )
            await clock.sleep(delay)
        finally:
            if api is not None:
                await api.close()


async def _run_watchers(
    cluster: str,
    served: Sequence[watching.Resource],
    *,
    api: ClusterApi,
    memory: Memory,
    sink: watching.Sink,
    settings: settings_mod.IngestSettings,
    metrics: metrics_mod.Metrics,
    cluster_health: ClusterHealth,
    clock: watching.Clock,
) -> None:
    watchers = [
        watching.Watcher(
            cluster,
            resource,
            api=api,
            sink=sink,
            settings=settings,
            metrics=metrics,
            health=cluster_health,
            clock=clock,
            backoff=reconciling.Backoff(
                initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s
            ),
            known=memory.get(str(resource.kind)),
        )
        for resource in served
    ]
    try:
        async with asyncio.TaskGroup() as group:
            for watcher in watchers:
                group.create_task(watcher.run(), name=f"watch/{cluster}/{watcher.resource.kind}")
    finally:
        # Keep what the watchers learnt, so a reconnect diffs against it instead of starting over.
        for watcher in watchers:
            memory[str(watcher.resource.kind)] = watcher.known
