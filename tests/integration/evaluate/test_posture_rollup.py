"""The posture rollup on the real broker: its snapshots are tallying.Tally's, however it runs.

Contribution records are produced as evaluate produces them (CloudEvents, tombstones for
deleted objects); the rollup's latest snapshot of every scope must equal what ``tallying.Tally``
computes from the objects' final contributions, with one rollup instance or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from evaluate_harness import CLUSTER, Bus

from kposture.evaluate.posture import contributing, rollup, tallying
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, topics
from kposture.schemas import posture as posture_schema

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CHECKS = {
    ("pss", "privileged"): (common.Severity.CRITICAL, ("PSS baseline/privileged", "NSA")),
    ("pss", "runAsNonRoot"): (common.Severity.HIGH, ("PSS restricted/runAsNonRoot",)),
    ("cis", "5.2.7"): (common.Severity.MEDIUM, ("CIS 1.12 5.2.7", "NSA")),
    ("cis", "5.7.4"): (common.Severity.LOW, ()),
    ("nsa", "readOnlyRoot"): (common.Severity.INFO, ("NSA",)),
}
Shown = tuple[int, int, int, dict[str, int], float]


def meta(baseline: str, check: str) -> tuple[common.Severity, tuple[str, ...]] | None:
    """The checks' severity and controls, as the policy in force gives them."""
    return CHECKS.get((baseline, check))


def random_contribution(rng: random.Random, namespace: str) -> tallying.Contribution | None:
    """An object's contribution (``None``: the object was deleted)."""
    if rng.random() < 0.15:
        return None
    passed, failing = [], []
    for (baseline, check), (severity, controls) in CHECKS.items():
        roll = rng.random()
        if roll < 0.5:
            passed.append((baseline, check))
        elif roll < 0.8:
            failing.append((baseline, check, tallying.FAIL, severity, controls))
        elif roll < 0.9:
            failing.append((baseline, check, tallying.WAIVED, severity, controls))
    return tallying.Contribution(CLUSTER, namespace, tuple(passed), tuple(failing))


def stream(
    seed: int, *, objects: int, changes: int
) -> list[tuple[str, tallying.Contribution | None]]:
    """Each object added, then random replacements and deletions (of one namespace, ``gone``,
    every object is deleted at the end, so its scope empties out)."""
    rng = random.Random(seed)
    namespaces = {
        n: ("" if n % 7 == 0 else rng.choice(["shop", "db", "gone"])) for n in range(objects)
    }
    out = [(f"{CLUSTER}/uid-{n}", random_contribution(rng, namespaces[n])) for n in range(objects)]
    for _ in range(changes):
        n = rng.randrange(objects)
        out.append((f"{CLUSTER}/uid-{n}", random_contribution(rng, namespaces[n])))
    out.extend((f"{CLUSTER}/uid-{n}", None) for n in range(objects) if namespaces[n] == "gone")
    return out


def expected(changes: list[tuple[str, tallying.Contribution | None]]) -> dict[str, Shown]:
    """What the tally shows for the objects' final contributions (scopes that count anything)."""
    tally = tallying.Tally(meta)
    for contribution in dict(changes).values():
        tally.add(0, contribution)
    return {s.key: shown(s) for s in tally.snapshots(now=NOW, only_changed=False)}


ZERO: Shown = (0, 0, 0, {}, 100.0)


def shown(snapshot: posture_schema.PostureSnapshot) -> Shown:
    """What a snapshot shows, without its time."""
    return (
        snapshot.passing,
        snapshot.failing,
        snapshot.waived,
        snapshot.failing_by_severity,
        snapshot.score,
    )


async def produce(bus: Bus, changes: list[tuple[str, tallying.Contribution | None]]) -> None:
    """Produce the contribution records as evaluate does (a tombstone for a deletion)."""
    name = bus.name(topics.Topic.CONTRIBUTIONS)
    sent = []
    for key, contribution in changes:
        if contribution is None:
            sent.append(await bus.producer.send(name, key=key.encode(), value=None))
            continue
        record = contributing.contribution_record(contribution, meta=meta, evaluated_at=NOW)
        event = envelope.wrap(
            record, event_type=codec.CONTRIBUTION_TYPE, source=f"kposture://{CLUSTER}/evaluate"
        )
        sent.append(
            await bus.producer.send(
                name, key=key.encode(), value=event.data, headers=kafka.record_headers(event)
            )
        )
    await asyncio.gather(*sent)


class Posture:
    """Reads the posture topic (committed records only) and keeps each scope's latest."""

    def __init__(self, settings: settings_mod.Settings) -> None:
        self._consumer = kafka.consumer(
            settings.kafka,
            kafka.topic_name(settings.kafka, topics.Topic.POSTURE),
            group_id=None,
            client_id="test-posture-reader",
            isolation_level="read_committed",
        )
        self.latest: dict[str, Shown] = {}
        self.records = 0

    def counting(self) -> dict[str, Shown]:
        """The latest snapshot of each scope that counts anything."""
        return {key: shown for key, shown in self.latest.items() if shown != ZERO}

    async def until(
        self, want: dict[str, Shown], *, step: str = "", timeout_s: float = 60.0
    ) -> None:
        """Read until every scope's latest snapshot is ``want``'s; fail with the difference."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.counting() != want:
                    batch = await self._consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            snapshot = envelope.decode_data(record.headers, record.value)
                            self.latest[record.key.decode()] = shown(snapshot)
                            self.records += 1
        except TimeoutError:
            got = self.counting()
            wrong = {
                k: (got.get(k), want.get(k))
                for k in got.keys() | want.keys()
                if got.get(k) != want.get(k)
            }
            pytest.fail(f"{step}: posture differs from the tally's (got, want): {wrong}")


@contextlib.asynccontextmanager
async def reading(settings: settings_mod.Settings) -> AsyncIterator[Posture]:
    """A started posture reader."""
    made = Posture(settings)
    await made._consumer.start()
    try:
        yield made
    finally:
        await made._consumer.stop()


@contextlib.asynccontextmanager
async def running(settings: settings_mod.Settings) -> AsyncIterator[rollup.RollupApp]:
    """A rollup instance running in this event loop."""
    app = rollup.RollupApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
def fast(settings: settings_mod.Settings) -> settings_mod.Settings:
    """The test's settings, with posture published every 0.2 s."""
    return msgspec.structs.replace(
        settings, evaluate=msgspec.structs.replace(settings.evaluate, posture_interval_s=0.2)
    )


async def test_published_posture_equals_the_tally_of_the_final_contributions(
    fast: settings_mod.Settings, bus: Bus
) -> None:
    """Additions, replacements and tombstones end in the tally's posture; an emptied scope
    is published as zero."""
    changes = stream(1, objects=150, changes=450)
    kept = len(changes)
    while changes[kept - 1][1] is None:
        kept -= 1
    before, after = changes[:kept], changes[kept:]
    cpu = time.process_time()
    async with reading(fast) as published, running(fast) as app:
        await produce(bus, before)
        await published.until(expected(before))
        assert published.latest[f"{CLUSTER}/namespace/gone"] != ZERO
        await produce(bus, after)
        await published.until(expected(changes))
        assert published.latest[f"{CLUSTER}/namespace/gone"] == ZERO
    cpu_s = time.process_time() - cpu
    print(
        f"one instance: {app.contributions_handled} contributions, {published.records} "
        f"snapshots, {cpu_s * 1e6 / len(changes):.0f} us CPU per contribution (whole process)"
    )


# Known defect: in ~1 run in 3 the instance left alone never finishes recovering its new tables.
@pytest.mark.faults
async def test_instances_joining_and_leaving_publish_the_posture_one_publishes(
    fast: settings_mod.Settings, bus: Bus
) -> None:
    """A second instance with the same app id joins, then the first leaves; at each step the
    posture is the tally's, as one instance publishes it (the test above)."""
    changes = stream(2, objects=150, changes=600)
    thirds = [changes[:250], changes[250:500], changes[500:]]
    async with reading(fast) as published, running(fast) as first:
        await produce(bus, thirds[0])
        await published.until(expected(changes[:250]), step="alone")
        async with running(fast) as second:
            await produce(bus, thirds[1])
            await published.until(expected(changes[:500]), step="joined")
            await first.stop()
            await produce(bus, thirds[2])
            await published.until(expected(changes), step="left")
            # Alone, the second instance handled the last third (and published its posture).
            assert second.contributions_handled >= len(thirds[2])
            assert second.snapshots_published
