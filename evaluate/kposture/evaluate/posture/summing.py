"""Posture arithmetic of the rollup: per-scope deltas of a contribution change, and their sums.

An object's contribution changing from ``old`` to ``new`` moves the counts of a few scopes
(its cluster, namespace, baselines and controls); ``deltas`` nets the two per scope. A scope's
``Sum`` adds the deltas up, each one once: a delta names the contributions partition and
offset it comes from, and a sum ignores what it has already applied, so a delta sent again
after a crash changes nothing. Counts and weights are those of ``tallying.Tally``. Pure: no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from kposture.schemas import codec, common
from kposture.schemas import posture as posture_schema

# Multiples of 0.25, so sums and differences of weights are exact in floating point: adding
# and later removing an object leaves a score exactly as a rebuild would compute it.
WEIGHT = {
    common.Severity.CRITICAL: 10.0,
    common.Severity.HIGH: 6.0,
    common.Severity.MEDIUM: 3.0,
    common.Severity.LOW: 1.0,
    common.Severity.INFO: 0.25,
}

Scope = tuple[str, posture_schema.Scope, str]
"""``(cluster, scope, scope key)``."""

_Item = tuple[str, str, str, posture_schema.Outcome, common.Severity, tuple[str, ...]]
# (cluster, namespace, baseline, outcome, severity, controls): what decides the scopes an
# outcome counts in and how; the check's name does not, so outcomes alike are counted once.


class Tallied(Protocol):
    """Counts of one scope as a snapshot shows them (``Counts``, or the worker tally's)."""

    passing: int
    failing: int
    waived: int
    by_severity: dict[str, int]

    def score(self) -> float:
        """Percentage of the severity weight that passes."""


@dataclasses.dataclass(slots=True)
class Counts:
    """Counts of (object, check) pairs in one scope, and their severity weights."""

    passing: int = 0
    failing: int = 0
    waived: int = 0
    by_severity: dict[str, int] = dataclasses.field(default_factory=dict)
    pass_weight: float = 0.0
    fail_weight: float = 0.0

    def count(self, outcome: posture_schema.Outcome, severity: common.Severity, n: int) -> None:
        """Add ``n`` (negative: remove) pairs with ``outcome`` and ``severity``."""
        weight = WEIGHT[severity] * n
        if outcome is posture_schema.Outcome.PASS:
            self.passing += n
            self.pass_weight += weight
        elif outcome is posture_schema.Outcome.WAIVED:
            self.waived += n
        else:
            self.failing += n
            self.fail_weight += weight
            _bump(self.by_severity, severity.value, n)

    def add(self, other: Counts) -> None:
        """Add another scope's counts (a delta) to these."""
        self.passing += other.passing
        self.failing += other.failing
        self.waived += other.waived
        self.pass_weight += other.pass_weight
        self.fail_weight += other.fail_weight
        for severity, n in other.by_severity.items():
            _bump(self.by_severity, severity, n)

    def zero(self) -> bool:
        """Nothing counted (for a delta: nothing moves)."""
        return not (
            self.passing
            or self.failing
            or self.waived
            or self.by_severity
            or self.pass_weight
            or self.fail_weight
        )

    def empty(self) -> bool:
        """No pair counts in the scope any more (its last object left it)."""
        return not (self.passing or self.failing or self.waived)

    def score(self) -> float:
        """Percentage of the severity weight that passes; 100 when nothing counts."""
        total = self.pass_weight + self.fail_weight
        return 100.0 if total == 0 else round(100.0 * self.pass_weight / total, 2)

    def fields(self) -> list[object]:
        """The counts as a JSON array (the wire and table form)."""
        return [
            self.passing,
            self.failing,
            self.waived,
            dict(sorted(self.by_severity.items())),
            self.pass_weight,
            self.fail_weight,
        ]

    @classmethod
    def of(cls, fields: list[object]) -> Counts:
        """Counts from ``fields()``."""
        passing, failing, waived, by_severity, pass_weight, fail_weight = fields
        assert isinstance(by_severity, dict)
        return cls(
            int(passing),  # type: ignore[call-overload]
            int(failing),  # type: ignore[call-overload]
            int(waived),  # type: ignore[call-overload]
            {str(k): int(v) for k, v in by_severity.items()},
            float(pass_weight),  # type: ignore[arg-type]
            float(fail_weight),  # type: ignore[arg-type]
        )


def _bump(counts: dict[str, int], key: str, n: int) -> None:
    left = counts.get(key, 0) + n
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)


def scopes_of(cluster: str, namespace: str, baseline: str, controls: Iterable[str]) -> list[Scope]:
    """The scopes an outcome counts in (as ``tallying._scopes_of``)."""
    scopes: list[Scope] = [
        (cluster, posture_schema.Scope.CLUSTER, cluster),
        (cluster, posture_schema.Scope.BASELINE, baseline),
    ]
    if namespace:
        scopes.append((cluster, posture_schema.Scope.NAMESPACE, namespace))
    scopes.extend((cluster, posture_schema.Scope.CONTROL, control) for control in controls)
    return scopes


def _items(contribution: posture_schema.Contribution | None) -> collections.Counter[_Item]:
    if contribution is None:
        return collections.Counter()
    cluster, namespace = contribution.cluster, contribution.namespace
    return collections.Counter(
        (cluster, namespace, o.baseline, o.outcome, o.severity, o.controls)
        for o in contribution.outcomes
    )


def deltas(
    old: posture_schema.Contribution | None, new: posture_schema.Contribution | None
) -> dict[Scope, Counts]:
    """What replacing ``old`` by ``new`` (``None``: no contribution) moves, per scope.

    Scopes whose counts do not move are left out; so is everything when nothing moves.
    """
    before, after = _items(old), _items(new)
    out: dict[Scope, Counts] = {}
    for item in before.keys() | after.keys():
        change = after[item] - before[item]
        if not change:
            continue
        cluster, namespace, baseline, outcome, severity, controls = item
        for scope in scopes_of(cluster, namespace, baseline, controls):
            counts = out.get(scope)
            if counts is None:
                counts = out[scope] = Counts()
            counts.count(outcome, severity, change)
    return {scope: counts for scope, counts in out.items() if not counts.zero()}


def scope_key(scope: Scope) -> str:
    """The key of a scope: ``<cluster>/<scope>/<scope_key>``, the posture topic's key."""
    cluster, kind, key = scope
    return f"{cluster}/{kind}/{key}"


def parse_scope_key(key: str) -> Scope:
    """The scope of ``scope_key``'s result (cluster names hold no ``/``, scope keys may)."""
    cluster, kind, rest = key.split("/", 2)
    return cluster, posture_schema.Scope(kind), rest


def encode_delta(counts: Counts, *, partition: int, offset: int) -> bytes:
    """A delta record's value: the counts and the contributions record they come from."""
    return codec.canonical([partition, offset, *counts.fields()])


def decode_delta(raw: bytes) -> tuple[int, int, Counts]:
    """``(partition, offset, counts)`` of ``encode_delta``'s result."""
    partition, offset, *fields = codec.decode(raw, list[object])
    return int(partition), int(offset), Counts.of(fields)  # type: ignore[call-overload]


@dataclasses.dataclass(slots=True)
class Sum:
    """A scope's counts, and per contributions partition the last offset applied to them."""

    counts: Counts = dataclasses.field(default_factory=Counts)
    applied: dict[int, int] = dataclasses.field(default_factory=dict)

    def apply(self, delta: Counts, *, partition: int, offset: int) -> bool:
        """Add a delta unless one from the same record or a later one was added already.

        The deltas of one contributions partition reach a scope in offset order, so an
        offset at or below the last one applied is a delta sent again; false for those.
        """
        if offset <= self.applied.get(partition, -1):
            return False
        self.applied[partition] = offset
        self.counts.add(delta)
        return True

    def encode(self) -> bytes:
        """The table value."""
        applied = {str(p): o for p, o in sorted(self.applied.items())}
        return codec.canonical([*self.counts.fields(), applied])

    @classmethod
    def decode(cls, raw: bytes) -> Sum:
        """A sum from its table value."""
        *fields, applied = codec.decode(raw, list[object])
        assert isinstance(applied, dict)
        return cls(Counts.of(fields), {int(p): int(o) for p, o in applied.items()})


def snapshot(scope: Scope, counts: Tallied, *, now: dt.datetime) -> posture_schema.PostureSnapshot:
    """The published snapshot of a scope's counts."""
    cluster, kind, key = scope
    return posture_schema.PostureSnapshot(
        cluster=cluster,
        scope=kind,
        scope_key=key,
        passing=counts.passing,
        failing=counts.failing,
        waived=counts.waived,
        failing_by_severity=dict(sorted(counts.by_severity.items())),
        score=counts.score(),
        computed_at=now,
    )
