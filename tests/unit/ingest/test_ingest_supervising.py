"""Cluster supervision: discovery skips unserved kinds; a failing cluster never stops another."""

from __future__ import annotations

import asyncio
import contextlib

from ingest_fakes import FakeApi, FakeClock, RecordingSink, eventually, pod

from kposture.ingest import kubeapi, supervising, watching
from kposture.ingest import metrics as metrics_mod
from kposture.runtime import health, kube
from kposture.runtime import settings as settings_mod

KINDS = [watching.KindRef.parse("v1/Pod"), watching.KindRef.parse("example.com/v1/Widget")]


async def test_discovery_skips_kinds_the_cluster_does_not_serve() -> None:
    """A group/version that is not served, or a kind without watch, is skipped."""
    api = FakeApi()
    api.served["v1"].append({"name": "bindings", "kind": "Binding", "verbs": ["create"]})
    kinds = [*KINDS, watching.KindRef.parse("v1/Binding")]
    served, skipped = await supervising.discover(api, kinds)
    assert [(r.kind.kind, r.plural, r.path) for r in served] == [("Pod", "pods", "/api/v1/pods")]
    assert sorted(str(k) for k in skipped) == ["example.com/v1/Widget", "v1/Binding"]


async def test_a_failing_cluster_does_not_stop_the_others() -> None:
    """An unreachable and a misconfigured cluster retry forever while a healthy one flows."""
    healthy = FakeApi()
    healthy.apply(pod("a", "uid-a", rv=1))
    readiness = health.Readiness()
    sink = RecordingSink()
    metrics = metrics_mod.Metrics()
    clock = FakeClock()
    attempts: dict[str, int] = {}

    async def connect(cluster: settings_mod.ClusterSettings) -> supervising.ClusterApi:
        attempts[cluster.name] = attempts.get(cluster.name, 0) + 1
        if cluster.name == "down":
            broken = FakeApi()
            broken.served = {}

            async def refuse(group_version: str) -> None:
                raise kubeapi.UnreachableError("connection refused")

            broken.discover = refuse  # type: ignore[method-assign,assignment]
            return broken
        if cluster.name == "badconfig":
            raise kube.ClusterConfigError("no such context")
        return healthy

    async def slow_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        await asyncio.sleep(0.01)

    clock.sleep = slow_sleep  # type: ignore[method-assign]
    tasks = [
        asyncio.create_task(
            supervising.supervise(
                settings_mod.ClusterSettings(name=name),
                kinds=KINDS,
                connect=connect,
                sink=sink,
                settings=settings_mod.IngestSettings(),
                metrics=metrics,
                readiness=readiness,
                clock=clock,
            )
        )
        for name in ("down", "ok", "badconfig")
    ]
    try:
        await eventually(
            lambda: (
                bool(sink.events)
                and attempts.get("down", 0) >= 2
                and attempts.get("badconfig", 0) >= 2
            )
        )
        healthy.apply(pod("b", "uid-b", rv=1))
        await eventually(lambda: len(sink.events) == 2)
        checks = readiness.details()
        assert checks["cluster/ok"]["ok"] is True
        assert checks["cluster/down"] == {
            **checks["cluster/down"],
            "ok": False,
            "detail": "unreachable",
        }
        assert checks["cluster/badconfig"]["detail"] == "config"
        assert not checks["cluster/down"]["critical"]
        up = metrics.registry.get_sample_value
        assert up("kposture_ingest_cluster_up", {"cluster": "ok"}) == 1
        assert up("kposture_ingest_cluster_up", {"cluster": "down"}) == 0
        assert up("kposture_ingest_kinds_skipped", {"cluster": "ok", "kind": "Widget"}) == 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
