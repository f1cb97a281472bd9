"""The publisher: a full buffer never drops, failed sends are resent in order, deletes tombstone."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

from ingest_fakes import FakeClock, FakeProducer

from kposture.ingest import metrics as metrics_mod
from kposture.ingest import publishing, reconciling
from kposture.runtime import health
from kposture.schemas import common, envelope, resources

Log = list[tuple[bytes, bytes | None, list[tuple[str, bytes]] | None]]


def event(
    uid: str, n: int, change: resources.Change = resources.Change.MODIFIED
) -> resources.ResourceEvent:
    """The ``n``-th event of object ``uid``."""
    return resources.ResourceEvent(
        cluster="c1",
        change=change,
        ref=common.ObjectRef(api_version="v1", kind="Pod", name=uid, uid=uid, namespace="ns"),
        object={"metadata": {"uid": uid}, "n": n},
        digest=f"d{n}",
        observed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


class Setup:
    """A publisher over fake producers that all append to one log."""

    def __init__(self, *, buffer_size: int = 100) -> None:
        self.log: Log = []
        self.producers: list[FakeProducer] = []
        self.open_gate = asyncio.Event()
        self.open_gate.set()
        self.clock = FakeClock()
        self.readiness = health.Readiness()
        self.publisher = publishing.Publisher(
            topic="t",
            open_producer=self._open,
            buffer_size=buffer_size,
            metrics=metrics_mod.Metrics(),
            readiness=self.readiness,
            clock=self.clock,
            backoff=reconciling.Backoff(
                initial_s=0.1,
                max_s=1.0,
                rng=random.Random(0),
            ),
        )
        self.fail_first_producer: set[int] = set()
        self.too_large: set[bytes] = set()

    async def _open(self) -> FakeProducer:
        await self.open_gate.wait()
        producer = FakeProducer(self.log)
        producer.too_large = self.too_large
        if not self.producers:
            producer.fail_sends = set(self.fail_first_producer)
        self.producers.append(producer)
        return producer

    def decoded(self) -> list[tuple[str, Any]]:
        """(key, n or None for a tombstone) of each record in the log."""
        out: list[tuple[str, Any]] = []
        for key, value, headers in self.log:
            if value is None:
                out.append((key.decode(), None))
            else:
                _, ev = envelope.decode_record(headers or [], value)
                out.append((key.decode(), ev.object["n"]))
        return out


async def test_full_buffer_makes_watchers_wait_and_drops_nothing() -> None:
    """With Kafka away and the buffer full, put() waits; then every event arrives, in order."""
    s = Setup(buffer_size=3)
    s.open_gate.clear()  # Kafka is unavailable
    runner = asyncio.create_task(s.publisher.run())

    async def watcher() -> None:
        for n in range(20):
            await s.publisher.put(event("a", n))

    producing = asyncio.create_task(watcher())
    await asyncio.sleep(0.05)
    assert not producing.done()  # the watcher waits behind the full buffer
    assert s.publisher.depth() == 3
    s.open_gate.set()
    await asyncio.wait_for(producing, 2)
    await asyncio.wait_for(s.publisher.drain(), 2)
    assert [n for _, n in s.decoded()] == list(range(20))
    runner.cancel()


async def test_failed_send_is_resent_from_the_first_failure_on_a_new_producer() -> None:
    """A failed record and everything after it is resent, so each key ends at its latest state."""
    s = Setup()
    s.fail_first_producer = {1}
    for n in range(4):
        await s.publisher.put(event("a" if n % 2 == 0 else "b", n))
    runner = asyncio.create_task(s.publisher.run())
    await asyncio.wait_for(s.publisher.drain(), 2)
    runner.cancel()
    records = s.decoded()
    assert len(s.producers) == 2
    assert s.producers[0].stopped
    last = dict(records)  # the last record per key wins, as compaction keeps it
    assert last == {"c1/a": 2, "c1/b": 3}
    # Per key, the values only ever move forward after the resend point.
    assert [n for k, n in records if k == "c1/b"][-1] == 3
    assert {n for _, n in records} == {0, 1, 2, 3}
    assert s.readiness.details()["kafka"]["ok"] is True


async def test_delete_publishes_the_event_then_a_tombstone() -> None:
    """A delete is two records with the same key: the deleted CloudEvent, then a null value."""
    s = Setup()
    await s.publisher.put(event("a", 1, resources.Change.DELETED))
    runner = asyncio.create_task(s.publisher.run())
    await asyncio.wait_for(s.publisher.drain(), 2)
    runner.cancel()
    assert [(k, v is None) for k, v, _ in s.log] == [(b"c1/a", False), (b"c1/a", True)]
    headers = dict(s.log[0][2] or [])
    assert headers["ce_type"] == b"io.kposture.resource.deleted.v1"
    assert headers["ce_source"] == b"kposture://c1/ingest"
    assert headers["ce_subject"] == b"ns/Pod/a"
    assert headers["content-type"] == b"application/json"


async def test_an_oversized_record_is_skipped_without_stalling_the_others() -> None:
    """A record Kafka can never take is logged and skipped; the records after it flow."""
    s = Setup()
    s.too_large.add(b"c1/big")
    await s.publisher.put(event("a", 1))
    await s.publisher.put(event("big", 1))
    await s.publisher.put(event("b", 2))
    runner = asyncio.create_task(s.publisher.run())
    await asyncio.wait_for(s.publisher.drain(), 2)
    runner.cancel()
    assert [k for k, _ in s.decoded()] == ["c1/a", "c1/b"]
    assert len(s.producers) == 1  # not treated as a broker failure
