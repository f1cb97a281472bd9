"""Incremental posture: the same snapshots as a rebuild of the whole tally, published on change."""

from __future__ import annotations

import collections
import datetime as dt
import random

from kposture.evaluate.engine import tracking
from kposture.evaluate.posture import tallying
from kposture.schemas import common, findings
from kposture.schemas import posture as posture_schema

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CHECKS = [("b1", f"c{n}") for n in range(6)] + [("b2", f"d{n}") for n in range(4)]
SEVERITIES = list(common.Severity)
WAIVER = findings.Waiver(name="w", reason="r", owner="o", ticket="t")


def meta_of(seed: int) -> tallying.CheckMeta:
    """Check metadata of a policy; some seeds drop a check, as a new policy version may."""
    rng = random.Random(seed)
    index = {
        ident: (rng.choice(SEVERITIES), tuple(f"ctl:{rng.randrange(4)}" for _ in range(2)))
        for ident in CHECKS
        if rng.random() < 0.9
    }
    return lambda baseline, check: index.get((baseline, check))


def finding(baseline: str, check: str, rng: random.Random) -> tracking.OpenFinding:
    """An open finding, waived one time in five."""
    return tracking.OpenFinding(
        baseline=baseline,
        check=check,
        baseline_version="v1",
        title="t",
        controls=(f"ctl:{rng.randrange(4)}",),
        severity=rng.choice(SEVERITIES),
        result=common.Result.FAIL,
        message="m",
        path="p",
        priority=50,
        first_seen=T0,
        waiver=WAIVER if rng.random() < 0.2 else None,
    )


def contribution(rng: random.Random) -> tallying.Contribution:
    """A random object's contribution: some checks pass, some are open."""
    passed, open_ = [], []
    for ident in CHECKS:
        draw = rng.random()
        if draw < 0.5:
            passed.append(ident)
        elif draw < 0.7:
            open_.append(finding(*ident, rng))
    return tallying.contribution(
        cluster=rng.choice(("c1", "c2")),
        namespace=rng.choice(("", "ns1", "ns2", "ns3")),
        passed=passed,
        open_findings=open_,
    )


def rebuilt(
    objects: dict[tuple[int, int], tallying.Contribution], meta: tallying.CheckMeta
) -> dict[str, tuple[object, ...]]:
    """Snapshots computed from scratch, as the tally did before it was incremental."""
    scopes: dict[tuple[str, str, str], collections.Counter[str]] = {}
    weights: dict[tuple[str, str, str], list[float]] = {}
    weight = {"critical": 10.0, "high": 6.0, "medium": 3.0, "low": 1.0, "info": 0.25}
    for item in objects.values():
        for key in item.outcomes():
            severity, controls = key.severity, key.controls
            if severity is None or controls is None:
                found = meta(key.baseline, key.check)
                if found is None:
                    continue
                severity, controls = found
            wanted = [("cluster", key.cluster), ("baseline", key.baseline)]
            if key.namespace:
                wanted.append(("namespace", key.namespace))
            wanted += [("control", c) for c in controls]
            for scope, scope_key in wanted:
                where = (key.cluster, scope, scope_key)
                counts = scopes.setdefault(where, collections.Counter())
                pair = weights.setdefault(where, [0.0, 0.0])
                counts[key.outcome] += 1
                if key.outcome == tallying.FAIL:
                    counts[f"sev:{severity}"] += 1
                    pair[1] += weight[severity]
                elif key.outcome == tallying.PASS:
                    pair[0] += weight[severity]
    out = {}
    for (cluster, scope, scope_key), counts in scopes.items():
        passing, failing = weights[(cluster, scope, scope_key)]
        total = passing + failing
        score = 100.0 if total == 0 else round(100.0 * passing / total, 2)
        by_severity = {k[4:]: v for k, v in sorted(counts.items()) if k.startswith("sev:")}
        out[f"{cluster}/{scope}/{scope_key}"] = (
            counts[tallying.PASS],
            counts[tallying.FAIL],
            counts[tallying.WAIVED],
            by_severity,
            score,
        )
    return out


def as_dict(snapshots: list[posture_schema.PostureSnapshot]) -> dict[str, tuple[object, ...]]:
    """Snapshots by key, reduced to what they count."""
    return {
        s.key: (s.passing, s.failing, s.waived, s.failing_by_severity, s.score) for s in snapshots
    }


Objects = dict[tuple[int, int], tallying.Contribution]


def edit(
    rng: random.Random,
    tally: tallying.Tally,
    objects: Objects,
    key: tuple[int, int],
    draw: float,
    *,
    put_below: float,
    delete_below: float,
) -> bool:
    """By ``draw``: give object ``key`` (partition, uid) a random contribution, or delete it;
    ``False`` when the draw is for neither (or there is nothing to delete)."""
    partition, old = key[0], objects.get(key)
    if draw < put_below:
        new = contribution(rng)
        objects[key] = new
        tally.replace(partition, old, new)
        return True
    if draw < delete_below and old is not None:
        del objects[key]
        tally.replace(partition, old, None)
        return True
    return False


def rebuild(tally: tallying.Tally, objects: Objects, partition: int) -> None:
    """Rebuild one partition's counts from the objects, as a sweep does from the table."""
    tally.drop(partition)
    for ident in [i for i in objects if i[0] == partition]:
        tally.add(partition, objects[ident])


def test_incremental_snapshots_equal_a_rebuild_through_adds_removes_drops_and_policy_swaps() -> (
    None
):
    """After any sequence of changes, a full snapshot equals the tally rebuilt from objects."""
    rng = random.Random(7)
    meta = meta_of(0)
    tally = tallying.Tally(meta)
    objects: dict[tuple[int, int], tallying.Contribution] = {}
    published: dict[str, tuple[object, ...]] = {}
    for step in range(600):
        partition, uid = rng.randrange(3), rng.randrange(20)
        draw = rng.random()
        if edit(rng, tally, objects, (partition, uid), draw, put_below=0.6, delete_below=0.9):
            pass
        elif draw < 0.95:
            rebuild(tally, objects, partition)
        else:
            meta = meta_of(step)
            tally.use(meta)
        changed = as_dict(tally.snapshots(now=T0, only_changed=True))
        expected = rebuilt(objects, meta)
        zero = (0, 0, 0, {}, 100.0)
        for key, value in changed.items():
            assert value == expected.get(key, zero)
        published.update(changed)
        published = {k: v for k, v in published.items() if k in expected}
        # What was published so far (changes only) adds up to the current posture exactly.
        assert published == expected
    assert as_dict(tally.snapshots(now=T0, only_changed=False)) == rebuilt(objects, meta)


def test_an_unchanged_tally_publishes_nothing_and_an_emptied_scope_publishes_zero_once() -> None:
    """Only changed scopes are published; the last object leaving a scope publishes zeros."""
    rng = random.Random(1)
    tally = tallying.Tally(meta_of(0))
    item = contribution(rng)
    tally.add(0, item)
    first = tally.snapshots(now=T0, only_changed=True)
    assert first
    assert tally.snapshots(now=T0, only_changed=True) == []
    tally.replace(0, item, None)
    gone = tally.snapshots(now=T0, only_changed=True)
    assert {s.key for s in gone} == {s.key for s in first}
    assert all((s.passing, s.failing, s.waived, s.score) == (0, 0, 0, 100.0) for s in gone)
    assert tally.snapshots(now=T0, only_changed=False) == []


def test_workers_sharing_the_partitions_publish_the_posture_of_all_of_them() -> None:
    """Two tallies own disjoint partitions and write shares into one table; the board's
    snapshots of the table equal the posture of every object, through moves of a partition
    from one worker to the other and policy swaps."""
    rng = random.Random(11)
    meta = meta_of(0)
    workers = [tallying.Tally(meta), tallying.Tally(meta)]
    owner = {0: 0, 1: 1, 2: 1}
    table = tallying.Shares()
    board = tallying.Board()
    objects: dict[tuple[int, int], tallying.Contribution] = {}
    published: dict[str, tuple[object, ...]] = {}

    def tick() -> dict[str, tuple[object, ...]]:
        for index, tally in enumerate(workers):
            for partition, where, counts in tally.shares():
                assert owner[partition] == index, "a worker wrote a share it does not own"
                table.put(partition, where, counts)
        return as_dict(board.snapshots(table, now=T0, only_changed=True))

    for step in range(400):
        partition, uid = rng.randrange(3), rng.randrange(15)
        tally = workers[owner[partition]]
        draw = rng.random()
        if edit(rng, tally, objects, (partition, uid), draw, put_below=0.6, delete_below=0.85):
            pass
        elif draw < 0.95:
            # The partition moves: the old owner forgets it silently, the new one rebuilds it
            # from the table and overwrites the old owner's shares.
            tally.forget(partition)
            owner[partition] = 1 - owner[partition]
            rebuild(workers[owner[partition]], objects, partition)
        else:
            meta = meta_of(step)
            for each in workers:
                each.use(meta)
        changed = tick()
        expected = rebuilt(objects, meta)
        published.update(changed)
        published = {k: v for k, v in published.items() if k in expected}
        assert published == expected
    assert as_dict(board.snapshots(table, now=T0, only_changed=False)) == rebuilt(objects, meta)


def test_the_shares_index_follows_changelog_writes() -> None:
    """A deleted key set to None, then popped (as dict updates do it): the scope's total follows."""
    rng = random.Random(3)
    tally = tallying.Tally(meta_of(0))
    tally.add(0, contribution(rng))
    tally.add(1, contribution(rng))
    source = tallying.Shares()
    for partition, where, counts in tally.shares():
        source.put(partition, where, counts)
    copy = tallying.Shares()
    copy.update(dict(source))  # a changelog batch
    assert copy.scopes() == source.scopes()
    where = next(iter(source.scopes()))
    assert copy.total(where).raw() == source.total(where).raw()
    for key in [k for k in source if tallying.parse_share_key(k) == (1, where)]:
        copy.update({key: None})
        copy.pop(key, None)
    copy.take_changed()
    remaining = tallying.Shares({k: v for k, v in source.items() if k in copy})
    assert copy.total(where).raw() == remaining.total(where).raw()
    assert tallying.parse_share_key(b"not a share") is None


def test_shares_of_partitions_not_asked_for_wait_for_a_call_that_asks() -> None:
    """A worker tells only the shares of partitions it has tallied: the others stay due."""
    rng = random.Random(5)
    tally = tallying.Tally(meta_of(0))
    tally.add(0, contribution(rng))
    tally.add(1, contribution(rng))
    told = tally.shares([0])
    assert {partition for partition, _, _ in told} == {0}
    assert tally.shares([0]) == []
    later = tally.shares([0, 1])
    assert {partition for partition, _, _ in later} == {1}
