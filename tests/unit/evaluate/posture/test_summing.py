"""The rollup's arithmetic: per-scope deltas add up to what ``tallying.Tally`` counts."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kposture.evaluate.posture import contributing, summing, tallying
from kposture.schemas import common
from kposture.schemas import posture as posture_schema

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CHECKS = {
    ("pss", "privileged"): (common.Severity.CRITICAL, ("PSS baseline/privileged", "NSA")),
    ("pss", "runAsNonRoot"): (common.Severity.HIGH, ("PSS restricted/runAsNonRoot",)),
    ("cis", "5.2.7"): (common.Severity.MEDIUM, ("CIS 1.12 5.2.7", "NSA")),
    ("cis", "5.7.4"): (common.Severity.LOW, ()),
    ("nsa", "readOnlyRoot"): (common.Severity.INFO, ("NSA",)),
}


def meta(baseline: str, check: str) -> tuple[common.Severity, tuple[str, ...]] | None:
    """The checks' severity and controls, as the policy in force gives them."""
    return CHECKS.get((baseline, check))


def random_contribution(rng: random.Random) -> tallying.Contribution | None:
    """An object's contribution in one of two clusters and three namespaces, or none."""
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
    return tallying.Contribution(
        rng.choice(["c1", "c2"]), rng.choice(["", "shop", "db"]), tuple(passed), tuple(failing)
    )


def record(contribution: tallying.Contribution | None) -> posture_schema.Contribution | None:
    """The contributions-topic record of a contribution (``None``: a tombstone)."""
    if contribution is None:
        return None
    return contributing.contribution_record(contribution, meta=meta, evaluated_at=NOW)


def snapshots_of(sums: dict[summing.Scope, summing.Counts]) -> list[posture_schema.PostureSnapshot]:
    """The snapshots of the scopes that count anything, in the Tally's order."""
    return [
        summing.snapshot(scope, counts, now=NOW)
        for scope, counts in sorted(sums.items())
        if not counts.empty()
    ]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), objects=st.integers(1, 12), changes=st.integers(0, 60))
def test_summed_deltas_equal_the_tally_after_any_replacements(
    seed: int, objects: int, changes: int
) -> None:
    """Adding up the deltas of every replacement gives the tally's snapshots of the end state."""
    rng = random.Random(seed)
    current: dict[int, tallying.Contribution | None] = dict.fromkeys(range(objects))
    sums: dict[summing.Scope, summing.Counts] = {}
    steps = [rng.randrange(objects) for _ in range(objects + changes)]
    for uid in steps:
        old, new = current[uid], random_contribution(rng)
        for scope, delta in summing.deltas(record(old), record(new)).items():
            sums.setdefault(scope, summing.Counts()).add(delta)
        current[uid] = new
    tally = tallying.Tally(meta)
    for contribution in current.values():
        tally.add(0, contribution)
    assert snapshots_of(sums) == tally.snapshots(now=NOW, only_changed=False)
    for counts in sums.values():
        assert counts.passing >= 0
        assert counts.failing >= 0
        assert counts.waived >= 0


def test_an_unchanged_contribution_moves_nothing() -> None:
    """The same outcomes evaluated again (another time, another order) give no delta."""
    rng = random.Random(7)
    contribution = random_contribution(rng) or random_contribution(rng)
    assert contribution is not None
    first = record(contribution)
    assert first is not None
    later = posture_schema.Contribution(
        cluster=first.cluster,
        namespace=first.namespace,
        outcomes=tuple(reversed(first.outcomes)),
        evaluated_at=NOW + dt.timedelta(hours=1),
    )
    assert summing.deltas(first, later) == {}


def test_a_tombstone_removes_exactly_what_the_object_added() -> None:
    """Adding an object and then deleting it leaves every scope it touched at zero."""
    added = record(tallying.Contribution("c1", "shop", (("pss", "privileged"),), ()))
    plus = summing.deltas(None, added)
    minus = summing.deltas(added, None)
    assert (
        set(plus)
        == set(minus)
        == {
            ("c1", posture_schema.Scope.CLUSTER, "c1"),
            ("c1", posture_schema.Scope.BASELINE, "pss"),
            ("c1", posture_schema.Scope.NAMESPACE, "shop"),
            ("c1", posture_schema.Scope.CONTROL, "PSS baseline/privileged"),
            ("c1", posture_schema.Scope.CONTROL, "NSA"),
        }
    )
    for scope, delta in plus.items():
        total = summing.Counts()
        total.add(delta)
        total.add(minus[scope])
        assert total.zero()
        assert delta.passing == 1
        assert delta.pass_weight == 10.0


def test_a_passing_check_that_left_the_policy_is_not_published() -> None:
    """A passing check the policy no longer knows is left out, as the tally leaves it out."""
    contribution = tallying.Contribution("c1", "", (("gone", "check"), ("cis", "5.7.4")), ())
    published = record(contribution)
    assert published is not None
    assert [(o.baseline, o.check, o.outcome) for o in published.outcomes] == [
        ("cis", "5.7.4", posture_schema.Outcome.PASS)
    ]


def test_a_sum_applies_each_records_delta_once() -> None:
    """A delta sent again (same partition, same or earlier offset) changes nothing."""
    delta = summing.deltas(None, record(tallying.Contribution("c1", "a", (("cis", "5.2.7"),), ())))
    one = next(iter(delta.values()))
    total = summing.Sum()
    assert total.apply(one, partition=0, offset=5)
    assert not total.apply(one, partition=0, offset=5)
    assert not total.apply(one, partition=0, offset=3)
    assert total.apply(one, partition=1, offset=3)
    assert total.counts.passing == 2
    restored = summing.Sum.decode(total.encode())
    assert restored == total
    assert not restored.apply(one, partition=1, offset=3)


def test_deltas_travel_as_bytes_unchanged() -> None:
    """A delta decodes to the counts, partition and offset it was encoded with."""
    failing = tallying.Contribution(
        "c1", "a", (), (("pss", "privileged", tallying.FAIL, common.Severity.CRITICAL, ("NSA",)),)
    )
    for scope, counts in summing.deltas(record(failing), None).items():
        assert summing.decode_delta(summing.encode_delta(counts, partition=2, offset=9)) == (
            2,
            9,
            counts,
        )
        assert summing.parse_scope_key(summing.scope_key(scope)) == scope
