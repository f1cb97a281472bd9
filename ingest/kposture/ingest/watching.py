"""The watchers: list, then watch, each (cluster, kind), and never miss a change.

One :class:`Watcher` per (cluster, kind) lists the kind across all namespaces, then watches it
with bookmarks from the list's resourceVersion, resuming from the last version it saw. It
relists, compares with what it knew and emits a synthetic delete for every object that
vanished, when the watch cannot be trusted to have seen everything: on 410 Gone, on a stream
that ends early, on a stream silent past the watchdog, and after any error. A watch that ends
because its server-side timeout ran out is routine and simply resumed. A periodic resync
relists too and re-emits unchanged objects as ``synced`` (anti-entropy). Errors back off
exponentially with jitter and a cap; a watcher never gives up and never stops another.

Each normalised object goes to a :class:`Sink` (the publisher's bounded buffer): when the
buffer is full, ``put`` waits, and so does the watcher, which is how Kafka back-pressure reaches
the apiserver instead of dropping events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn, Protocol

from kposture.ingest import kubeapi, normalising, reconciling
from kposture.ingest import metrics as metrics_mod
from kposture.runtime import settings as settings_mod
from kposture.schemas import common, resources

log = logging.getLogger(__name__)

_PAGE_SIZE = 500
# A watch that lasted this share of its server-side timeout ended on schedule, not by accident.
_ROUTINE_END_SHARE = 0.9


@dataclasses.dataclass(frozen=True, slots=True)
class KindRef:
    """A configured kind: ``group/version/Kind``, or ``version/Kind`` for the core group."""

    group: str
    version: str
    kind: str

    @classmethod
    def parse(cls, text: str) -> KindRef:
        """Parse ``apps/v1/Deployment`` or ``v1/Pod``; ValueError if it is neither."""
        parts = text.strip().split("/")
        if len(parts) == 2 and all(parts):
            return cls("", parts[0], parts[1])
        if len(parts) == 3 and all(parts):
            return cls(parts[0], parts[1], parts[2])
        raise ValueError(f"kind {text!r} is not group/version/Kind or version/Kind")

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` objects of this kind carry."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.api_version}/{self.kind}"


DEFAULT_KINDS: tuple[str, ...] = (
    "v1/Namespace",
    "v1/Pod",
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "apps/v1/DaemonSet",
    "apps/v1/ReplicaSet",
    "batch/v1/Job",
    "batch/v1/CronJob",
    "v1/Service",
    "networking.k8s.io/v1/Ingress",
    "networking.k8s.io/v1/NetworkPolicy",
    "v1/ServiceAccount",
    "rbac.authorization.k8s.io/v1/Role",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/RoleBinding",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
    "v1/Secret",
    "v1/ConfigMap",
    "v1/ResourceQuota",
    "v1/LimitRange",
    "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
    "v1/Node",
)
"""The kinds watched when the settings name none."""


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A kind as one cluster serves it: its REST collection path."""

    kind: KindRef
    plural: str

    @property
    def path(self) -> str:
        """The cluster-wide collection path."""
        return kubeapi.resource_path(self.kind.group, self.kind.version, self.plural)


class Clock(Protocol):
    """Time as the watchers and the publisher see it (a fake one in tests)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def now(self) -> dt.datetime:
        """The current UTC time, for ``observed_at``."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return common.utcnow()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)


class KubeApi(Protocol):
    """What a watcher needs of one cluster's API (:class:`kubeapi.RestApi` is the real one)."""

    async def discover(self, group_version: str) -> list[dict[str, Any]] | None:
        """The resources served under ``group_version``; None if it is not served."""

    async def list_page(self, path: str, *, limit: int, continue_token: str) -> dict[str, Any]:
        """One page of a list."""

    def watch(
        self, path: str, *, resource_version: str, timeout_s: int
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """A watch stream from ``resource_version``; errors are :class:`kubeapi.KubeApiError`."""


class Sink(Protocol):
    """Where watchers put events; ``put`` waits while the buffer is full, it never drops."""

    async def put(self, event: resources.ResourceEvent) -> None:
        """Hand one event over for publishing."""


class Health(Protocol):
    """Where watchers report their state (:class:`supervising.ClusterHealth` is the real one)."""

    def contact(self, kind: str) -> None:
        """The apiserver answered a request for ``kind``."""

    def failed(self, kind: str, reason: str) -> None:
        """A request for ``kind`` failed with ``reason``."""


class Watcher:
    """Lists and watches one kind in one cluster and publishes every change, in order."""

    def __init__(
        self,
        cluster: str,
        resource: Resource,
        *,
        api: KubeApi,
        sink: Sink,
        settings: settings_mod.IngestSettings,
        metrics: metrics_mod.Metrics,
        health: Health,
        clock: Clock,
        backoff: reconciling.Backoff,
        known: Mapping[str, reconciling.Observed] | None = None,
    ) -> None:
        self.cluster = cluster
        self.resource = resource
        self._api = api
        self._sink = sink
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._backoff = backoff
        # Seeded from the topic at start-up, so objects deleted while ingest was down still get
        # their delete, and unchanged ones are not re-published.
        self.known: dict[str, reconciling.Observed] = dict(known or {})
        self.resource_version = ""
        self._next_resync = 0.0
        self._kind = resource.kind.kind
        self._labels = {"cluster": cluster, "kind": self._kind}

    async def run(self) -> NoReturn:
        """List and watch until cancelled."""
        relist_reason: str | None = "initial"
        while True:
            try:
                if relist_reason is not None:
                    await self._relist(relist_reason)
                    relist_reason = None
                relist_reason = await self._watch_once()
            except kubeapi.KubeApiError as exc:
                self._metrics.watch_restarts.labels(**self._labels, reason=exc.reason).inc()
                relist_reason = exc.reason
                if isinstance(exc, kubeapi.GoneError):
                    # 410 Gone: our resourceVersion was compacted away. Relist; this is
                    # routine, not an error, so no wait.
                    log.info("watch expired, relisting", extra=self._log_extra(reason="gone"))
                    continue
                self._health.failed(self._kind, exc.reason)
                delay = self._backoff.next_delay(retriable=exc.retriable)
                log.warning(
                    "watch failed (%s: %s), retrying",
                    exc.reason,
                    exc,
                    extra=self._log_extra(reason=exc.reason, error=str(exc), retry_in_s=delay),
                )
                await self._clock.sleep(delay)

    async def _relist(self, reason: str) -> None:
        """List everything, publish the differences, and remember the list's version."""
        listed: dict[str, reconciling.Observed] = {}
        continue_token = ""
        while True:
            page = await self._api.list_page(
                self.resource.path, limit=_PAGE_SIZE, continue_token=continue_token
            )
            self._health.contact(self._kind)
            for item in page["items"]:
                if isinstance(item, dict):
                    obj = self._normalise(item)
                    listed[_uid(obj)] = reconciling.Observed(obj, normalising.digest(obj))
            metadata = page.get("metadata") or {}
            continue_token = str(metadata.get("continue") or "")
            if not continue_token:
                self.resource_version = str(metadata.get("resourceVersion") or "")
                break
        self._metrics.relists.labels(**self._labels, reason=reason).inc()
        self._metrics.received.labels(**self._labels).inc(len(listed))
        plan = reconciling.reconcile(self.known, listed)
        resync = reason == "resync"
        for uid in plan.added:
            await self._emit(resources.Change.ADDED, listed[uid].object, listed[uid].digest)
        for uid in plan.modified:
            await self._emit(resources.Change.MODIFIED, listed[uid].object, listed[uid].digest)
        for uid in plan.unchanged:
            if resync:
                await self._emit(resources.Change.SYNCED, listed[uid].object, listed[uid].digest)
            else:
                self._metrics.suppressed.labels(**self._labels).inc()
        for uid in plan.vanished:
            gone = self.known[uid]
            self._metrics.synthetic_deletes.labels(**self._labels).inc()
            await self._emit(resources.Change.DELETED, gone.object, gone.digest)
        self.known = listed
        if resync or reason == "initial":
            self._next_resync = self._clock.monotonic() + self._settings.resync_interval_s
        if plan.vanished or reason not in {"initial", "resync"}:
            log.info(
                "relisted",
                extra=self._log_extra(
                    reason=reason, objects=len(listed), synthetic_deletes=len(plan.vanished)
                ),
            )

    async def _watch_once(self) -> str | None:
        """Watch until the stream ends; return why a relist is needed, or None to resume."""
        timeout_s = self._settings.watch_timeout_s
        started = self._clock.monotonic()
        async with self._api.watch(
            self.resource.path, resource_version=self.resource_version, timeout_s=timeout_s
        ) as stream:
            self._health.contact(self._kind)
            self._backoff.reset()
            while True:
                until_resync = self._next_resync - self._clock.monotonic()
                if until_resync <= 0:
                    return "resync"
                try:
                    async with asyncio.timeout(min(self._settings.watchdog_s, until_resync)):
                        event = await anext(stream, None)
                except TimeoutError:
                    if self._next_resync <= self._clock.monotonic():
                        return "resync"
                    self._restarted("watchdog")
                    return "watchdog"
                if event is None:
                    break
                await self._handle(event)
        if self._clock.monotonic() - started >= timeout_s * _ROUTINE_END_SHARE:
            self._restarted("timeout")
            return None
        self._restarted("stream_ended")
        return "stream_ended"

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        raw = event["object"]
        version = str((raw.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        self._health.contact(self._kind)
        self._metrics.received.labels(**self._labels).inc()
        obj = self._normalise(raw)
        uid = _uid(obj)
        digest = normalising.digest(obj)
        if kind == "DELETED":
            self.known.pop(uid, None)
            await self._emit(resources.Change.DELETED, obj, digest)
        elif kind in {"ADDED", "MODIFIED"}:
            change = reconciling.classify(self.known.get(uid), digest)
            self.known[uid] = reconciling.Observed(obj, digest)
            if change is None:
                self._metrics.suppressed.labels(**self._labels).inc()
            else:
                await self._emit(change, obj, digest)
        # Only after the event is in the buffer: a restart resumes after what was published.
        self.resource_version = version or self.resource_version

    def _normalise(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return normalising.normalise(
            item, api_version=self.resource.kind.api_version, kind=self._kind
        )

    async def _emit(self, change: resources.Change, obj: dict[str, Any], digest: str) -> None:
        event = resources.ResourceEvent(
            cluster=self.cluster,
            change=change,
            ref=normalising.ref(obj),
            object=obj,
            digest=digest,
            observed_at=self._clock.now(),
        )
        await self._sink.put(event)

    def _restarted(self, reason: str) -> None:
        self._metrics.watch_restarts.labels(**self._labels, reason=reason).inc()

    def _log_extra(self, **fields: object) -> dict[str, object]:
        return {"cluster": self.cluster, "kind": str(self.resource.kind), **fields}


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
