"""The watcher's list/watch loop against a fake cluster API: changes, relists, resyncs, errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from ingest_fakes import FakeApi, FakeClock, RecordingHealth, RecordingSink, eventually, pod

from kposture.ingest import kubeapi, reconciling, watching
from kposture.ingest import metrics as metrics_mod
from kposture.runtime import settings as settings_mod

POD = watching.Resource(watching.KindRef("", "v1", "Pod"), "pods")


class Harness:
    """A running watcher with its fakes."""

    def __init__(self, **settings: float) -> None:
        self.api = FakeApi()
        self.sink = RecordingSink()
        self.clock = FakeClock()
        self.health = RecordingHealth()
        self.metrics = metrics_mod.Metrics()
        self.settings = settings_mod.IngestSettings(
            **{"resync_interval_s": 600.0, "watch_timeout_s": 290, "watchdog_s": 330.0, **settings}
        )
        self.watcher = watching.Watcher(
            "c1",
            POD,
            api=self.api,
            sink=self.sink,
            settings=self.settings,
            metrics=self.metrics,
            health=self.health,
            clock=self.clock,
            backoff=reconciling.Backoff(
                initial_s=0.5,
                max_s=30.0,
                rng=random.Random(3),
            ),
        )

    def metric(self, name: str, **labels: str) -> float:
        """A sample value from the watcher's registry."""
        value = self.metrics.registry.get_sample_value(
            name, {"cluster": "c1", "kind": "Pod", **labels}
        )
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """A harness whose watcher runs for the duration of the test."""
    h = Harness()
    h.api.apply(pod("a", "uid-a", rv=1))
    h.api.apply(pod("b", "uid-b", rv=1))
    task = asyncio.create_task(h.watcher.run())
    await eventually(lambda: len(h.api.streams) == 1)
    yield h
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_initial_list_publishes_every_object_as_added(harness: Harness) -> None:
    """The first list emits added for each object and the watch starts from its version."""
    assert sorted(harness.sink.changes()) == [("added", "a"), ("added", "b")]
    assert harness.api.watches == [str(harness.api.rv)]
    event = harness.sink.events[0]
    assert event.cluster == "c1"
    assert event.key == f"c1/{event.ref.uid}"
    assert "managedFields" not in event.object["metadata"]


async def test_watch_events_become_changes_and_status_only_updates_are_suppressed(
    harness: Harness,
) -> None:
    """Spec changes are modified, status-only changes nothing, deletes deleted, in order."""
    harness.api.apply(pod("a", "uid-a", rv=0, phase="Running"))  # status only
    harness.api.apply(pod("a", "uid-a", rv=0, image="redis"))
    harness.api.apply(pod("c", "uid-c", rv=0))
    harness.api.delete("uid-b")
    await eventually(lambda: len(harness.sink.events) == 5)
    assert harness.sink.changes()[2:] == [("modified", "a"), ("added", "c"), ("deleted", "b")]
    assert harness.metric("kposture_ingest_events_suppressed_total") == 1
    assert harness.watcher.resource_version == str(harness.api.rv)


async def test_gone_relists_and_emits_synthetic_deletes(harness: Harness) -> None:
    """After 410 Gone, objects that vanished unseen get a delete, new ones an add, and the
    watch resumes from the new list."""
    harness.api.delete("uid-a", silently=True)
    harness.api.apply(pod("c", "uid-c", rv=0), silently=True)
    harness.api.apply(pod("b", "uid-b", rv=0, image="redis"), silently=True)
    harness.api.expire()
    await eventually(lambda: len(harness.api.watches) == 2)
    assert sorted(harness.sink.changes()[2:]) == [
        ("added", "c"),
        ("deleted", "a"),
        ("modified", "b"),
    ]
    deleted = next(e for e in harness.sink.events if e.change.value == "deleted")
    assert deleted.ref.uid == "uid-a"  # the last known state of the vanished object
    assert harness.api.watches[-1] == str(harness.api.rv)
    assert harness.metric("kposture_ingest_relists_total", reason="gone") == 1
    assert harness.metric("kposture_ingest_synthetic_deletes_total") == 1
    assert harness.clock.sleeps == []  # 410 is routine: no backoff


async def test_early_stream_end_relists(harness: Harness) -> None:
    """A stream that ends before its timeout (apiserver restart) triggers a relist."""
    harness.api.delete("uid-a", silently=True)
    harness.api.end_streams()
    await eventually(lambda: len(harness.api.watches) == 2)
    assert harness.sink.changes()[2:] == [("deleted", "a")]
    assert harness.metric("kposture_ingest_relists_total", reason="stream_ended") == 1


async def test_routine_timeout_resumes_without_relisting(harness: Harness) -> None:
    """A stream that lasted its server-side timeout is resumed from the last version."""
    harness.api.bookmark()
    await eventually(lambda: harness.watcher.resource_version == str(harness.api.rv))
    harness.clock.t += 290
    harness.api.end_streams()
    await eventually(lambda: len(harness.api.watches) == 2)
    assert harness.api.lists == 1
    assert harness.metric("kposture_ingest_watch_restarts_total", reason="timeout") == 1


async def test_resync_re_emits_state_as_synced(harness: Harness) -> None:
    """When the resync interval has passed, a relist emits synced for unchanged objects."""
    harness.clock.t += 601
    harness.api.bookmark()  # wakes the watcher so it notices the time
    await eventually(lambda: len(harness.sink.events) == 4)
    assert sorted(harness.sink.changes()[2:]) == [("synced", "a"), ("synced", "b")]


async def test_silent_stream_trips_the_watchdog() -> None:
    """A stream silent past the watchdog is abandoned and the kind relisted."""
    h = Harness(watchdog_s=0.05)
    task = asyncio.create_task(h.watcher.run())
    try:
        await eventually(lambda: len(h.api.watches) >= 2)
        assert h.metric("kposture_ingest_relists_total", reason="watchdog") >= 1
    finally:
        task.cancel()


async def test_errors_back_off_exponentially_and_recover() -> None:
    """Unreachable errors wait a growing, jittered delay; success resets the schedule."""
    h = Harness()
    h.api.list_errors = [kubeapi.UnreachableError("refused")] * 4
    task = asyncio.create_task(h.watcher.run())
    try:
        await eventually(lambda: len(h.api.streams) == 1)
        assert len(h.clock.sleeps) == 4
        for delay, ceiling in zip(h.clock.sleeps, [0.5, 1.0, 2.0, 4.0], strict=True):
            assert ceiling / 2 <= delay <= ceiling
        assert h.health.failures == [("Pod", "unreachable")] * 4
        assert h.metric("kposture_ingest_watch_restarts_total", reason="unreachable") == 4
    finally:
        task.cancel()


async def test_forbidden_waits_the_cap() -> None:
    """A 403 is not retried quickly: it waits about the maximum backoff."""
    h = Harness()
    h.api.list_errors = [kubeapi.ForbiddenError("no", status=403)]
    task = asyncio.create_task(h.watcher.run())
    try:
        await eventually(lambda: len(h.api.streams) == 1)
        assert h.clock.sleeps[0] >= 15.0
    finally:
        task.cancel()


async def test_seeded_state_publishes_only_differences() -> None:
    """Seeded from the topic, the first list publishes changes and deletes, not everything."""
    h = Harness()
    h.api.apply(pod("a", "uid-a", rv=1))
    first = Harness()  # compute the published form of the same objects
    first.api.objects = dict(h.api.objects)
    first.api.apply(pod("gone", "uid-gone", rv=1))
    task = asyncio.create_task(first.watcher.run())
    await eventually(lambda: len(first.sink.events) == 2)
    task.cancel()
    seeded = watching.Watcher(
        "c1",
        POD,
        api=h.api,
        sink=h.sink,
        settings=h.settings,
        metrics=h.metrics,
        health=h.health,
        clock=h.clock,
        backoff=reconciling.Backoff(initial_s=0.5, max_s=30.0),
        known=first.watcher.known,
    )
    task = asyncio.create_task(seeded.run())
    try:
        await eventually(lambda: len(h.api.streams) == 1)
        assert h.sink.changes() == [("deleted", "gone")]
    finally:
        task.cancel()
