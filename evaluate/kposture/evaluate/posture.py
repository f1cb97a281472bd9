"""Posture: counts and a score per cluster, namespace, baseline and control.

The stream processor tells the ``Tally`` what each object contributes (its passing checks and
its failing or waived ones) whenever an object's state changes, removing the old contribution
first. Objects alike (the pods of one deployment, the config maps of one namespace) contribute
alike, so the tally counts *contributions*, not objects: its size grows with clusters x
namespaces x distinct outcomes rather than with objects, and an event costs one counter
update. Counts are kept per source partition so a rebalance (or a re-evaluation sweep) can
drop and rebuild exactly one partition's share.

The aggregates per scope are maintained incrementally: changes of contributions accumulate
(and mostly cancel out) between two publications, are netted per outcome key (an object's
old and new contributions share most keys), then each net change of a key updates the scopes
it falls in and marks them dirty. Publishing "on change" builds snapshots of the dirty scopes
only, never of the whole tally (a fleet has tens of thousands of outcome keys, and rebuilding
them every second cost more than evaluating). Controls and severity of *passing* checks are
not kept per object; they come from the policy in force, and the scopes are rebuilt when the
policy changes.

Scores weight each (object, check) pair by its severity; waived findings count neither for
nor against the score; ``error`` results count as failing (nobody can say they pass).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from kposture.evaluate import tracking
from kposture.schemas import common, posture

# Multiples of 0.25, so sums and differences of weights are exact in floating point: adding
# and later removing an object leaves a score exactly as a rebuild would compute it.
_WEIGHT = {
    common.Severity.CRITICAL: 10.0,
    common.Severity.HIGH: 6.0,
    common.Severity.MEDIUM: 3.0,
    common.Severity.LOW: 1.0,
    common.Severity.INFO: 0.25,
}

PASS = "pass"  # noqa: S105 - an outcome name, not a password
FAIL = "fail"
WAIVED = "waived"

CheckMeta = Callable[[str, str], tuple[common.Severity, tuple[str, ...]] | None]
"""Looks up ``(severity, controls)`` of ``(baseline, check)`` in the policy in force."""

ROUTES_CACHED = 1_000_000
"""Outcome keys whose scopes are remembered (about as many as the tally holds)."""

KEYS_CACHED = 100_000
"""Distinct contributions whose outcome keys are remembered between publications."""

_Scope = tuple[str, posture.Scope, str]  # (cluster, scope, scope key)
_Route = tuple[common.Severity, tuple[_Scope, ...]] | tuple[()]


class _Key(NamedTuple):
    # A tuple, not a dataclass: tuple hashing and comparison run in C.
    cluster: str
    namespace: str
    baseline: str
    check: str
    outcome: str  # pass | fail | waived
    severity: common.Severity | None  # None for passing checks: looked up when needed
    controls: tuple[str, ...] | None


class Contribution(NamedTuple):
    """What one object adds to the tally: its passing checks and its open findings' outcomes.

    ``failing`` holds ``(baseline, check, outcome, severity, controls)`` per open finding, not
    the finding itself: its message, priority and first_seen do not count, and leaving them
    out makes the contributions of objects alike equal (a tuple, so hashing runs in C).
    """

    cluster: str
    namespace: str
    passed: tuple[tuple[str, str], ...]
    failing: tuple[tuple[str, str, str, common.Severity, tuple[str, ...]], ...]

    def outcomes(self) -> Iterator[_Key]:
        """One key per (check, outcome)."""
        cluster, namespace = self.cluster, self.namespace
        for baseline, check in self.passed:
            yield _Key(cluster, namespace, baseline, check, PASS, None, None)
        for baseline, check, outcome, severity, controls in self.failing:
            yield _Key(cluster, namespace, baseline, check, outcome, severity, controls)


@dataclasses.dataclass
class _Counts:
    passing: int = 0
    failing: int = 0
    waived: int = 0
    by_severity: dict[str, int] = dataclasses.field(default_factory=dict)
    pass_weight: float = 0.0
    fail_weight: float = 0.0

    def add(self, outcome: str, severity: common.Severity, count: int) -> None:
        weight = _WEIGHT[severity] * count
        if outcome == PASS:
            self.passing += count
            self.pass_weight += weight
        elif outcome == WAIVED:
            self.waived += count
        else:
            self.failing += count
            self.fail_weight += weight
            left = self.by_severity.get(severity.value, 0) + count
            if left:
                self.by_severity[severity.value] = left
            else:
                del self.by_severity[severity.value]

    def empty(self) -> bool:
        # Counts never go negative (removals apply first and only remove what was added),
        # so a scope with nothing counted is one no key falls in any more.
        return not (self.passing or self.failing or self.waived)

    def score(self) -> float:
        total = self.pass_weight + self.fail_weight
        return 100.0 if total == 0 else round(100.0 * self.pass_weight / total, 2)

    def signature(self) -> tuple[object, ...]:
        return (
            self.passing,
            self.failing,
            self.waived,
            tuple(sorted(self.by_severity.items())),
            self.score(),
        )


class Tally:
    """Posture counts of the partitions this worker owns, updated object by object."""

    def __init__(self, meta: CheckMeta | None = None) -> None:
        self._parts: dict[int, collections.Counter[Contribution]] = {}
        self._pending: collections.Counter[Contribution] = collections.Counter()
        self._meta: CheckMeta = meta or (lambda baseline, check: None)
        self._routes: dict[_Key, _Route] = {}
        self._scopes: dict[_Scope, _Counts] = {}
        self._dirty: set[_Scope] = set()
        self._published: dict[_Scope, tuple[object, ...]] = {}
        self._scope_sets: dict[tuple[_Scope, ...], tuple[_Scope, ...]] = {}
        # Objects alike share contributions, so their outcome keys are built once.
        self._keys: dict[Contribution, tuple[_Key, ...]] = {}

    def use(self, meta: CheckMeta) -> None:
        """Take the policy in force: re-aggregate every scope with its checks' metadata."""
        self._meta = meta
        self._routes = {}
        self._scope_sets = {}
        self._dirty.update(self._scopes)
        self._scopes = {}
        self._pending = collections.Counter()
        for counter in self._parts.values():
            self._pending.update(counter)

    def add(self, partition: int, contribution: Contribution | None, *, sign: int = 1) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) one object's contribution."""
        if contribution is not None:
            self._count(
                self._parts.setdefault(partition, collections.Counter()), contribution, sign
            )

    def replace(self, partition: int, old: Contribution | None, new: Contribution | None) -> None:
        """An object's state changed from ``old`` to ``new``."""
        if old == new:
            return  # most events change nothing that posture counts
        counter = self._parts.setdefault(partition, collections.Counter())
        if old is not None:
            self._count(counter, old, -1)
        if new is not None:
            self._count(counter, new, 1)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or about to be rebuilt from the table)."""
        self._pending.subtract(self._parts.pop(partition, {}))

    def snapshots(self, *, now: dt.datetime, only_changed: bool) -> list[posture.PostureSnapshot]:
        """Snapshots of every scope; with ``only_changed``, those that changed since the last.

        A scope that emptied out (its last object deleted) is published once as all zero.
        """
        self._aggregate()
        wanted = self._dirty if only_changed else self._dirty | self._scopes.keys()
        out: list[posture.PostureSnapshot] = []
        gone: list[_Scope] = []
        for where in sorted(wanted):
            counts = self._scopes.get(where)
            if counts is None:
                if where in self._published:
                    gone.append(where)
                continue
            signature = counts.signature()
            if only_changed and self._published.get(where) == signature:
                continue
            self._published[where] = signature
            out.append(_snapshot(where, counts, now))
        for where in gone:
            del self._published[where]
            out.append(_snapshot(where, _Counts(), now))
        self._dirty = set()
        return out

    def _count(
        self, counter: collections.Counter[Contribution], contribution: Contribution, sign: int
    ) -> None:
        left = counter[contribution] + sign
        if left:
            counter[contribution] = left
        else:
            del counter[contribution]
        self._pending[contribution] += sign

    def _aggregate(self) -> None:
        # Removals first: every count they take away is there, so no scope goes below zero
        # and a scope that empties out is one that nothing falls in any more.
        # An object that changed replaced one contribution by another that mostly holds the
        # same outcomes: net the outcome keys first, so only the ones that moved reach scopes.
        net: dict[_Key, int] = {}
        get = net.get
        keys_of = self._keys
        for contribution, change in self._pending.items():
            if change:
                keys = keys_of.get(contribution)
                if keys is None:
                    if len(keys_of) >= KEYS_CACHED:
                        keys_of.clear()
                    keys = keys_of[contribution] = tuple(contribution.outcomes())
                for key in keys:
                    net[key] = get(key, 0) + change
        self._pending = collections.Counter()
        scopes = self._scopes
        dirty = self._dirty
        for key, change in sorted(((k, n) for k, n in net.items() if n), key=lambda i: i[1]):
            route = self._routes.get(key)
            if route is None:
                route = self._route(key)
            if not route:
                continue  # the check left the policy; the sweep will drop it
            severity, scopes_of_key = route
            for where in scopes_of_key:
                counts = scopes.get(where)
                if counts is None:
                    counts = scopes[where] = _Counts()
                counts.add(key.outcome, severity, change)
                if counts.empty():
                    del scopes[where]
                dirty.add(where)

    def _route(self, key: _Key) -> _Route:
        # Which scopes a key counts in, and with which severity: the same for every change of
        # the key under one policy, so it is worked out once.
        severity, controls = key.severity, key.controls
        if severity is None or controls is None:
            found = self._meta(key.baseline, key.check)
            if found is None:
                self._routes[key] = ()
                return ()
            severity, controls = found
        cluster = key.cluster
        scopes = [
            (cluster, posture.Scope.CLUSTER, cluster),
            (cluster, posture.Scope.BASELINE, key.baseline),
        ]
        if key.namespace:
            scopes.append((cluster, posture.Scope.NAMESPACE, key.namespace))
        scopes.extend((cluster, posture.Scope.CONTROL, control) for control in controls)
        if len(self._routes) >= ROUTES_CACHED:
            self._routes.clear()
            self._scope_sets.clear()
        # Every check of a namespace with the same controls falls in the same scopes: one
        # shared tuple for all of them, not one per key (keys number namespaces x checks).
        shared = tuple(scopes)
        shared = self._scope_sets.setdefault(shared, shared)
        route = self._routes[key] = (severity, shared)
        return route


def contribution(
    *,
    cluster: str,
    namespace: str,
    passed: Iterable[tuple[str, str]],
    open_findings: Iterable[tracking.OpenFinding],
) -> Contribution:
    """The contribution of one object's state."""
    return Contribution(
        cluster,
        namespace,
        passed if isinstance(passed, tuple) else tuple(passed),
        tuple(
            (
                f.baseline,
                f.check,
                WAIVED if f.waiver is not None else FAIL,
                f.severity,
                f.controls,
            )
            for f in open_findings
        ),
    )


def _snapshot(where: _Scope, counts: _Counts, now: dt.datetime) -> posture.PostureSnapshot:
    cluster, scope, scope_key = where
    return posture.PostureSnapshot(
        cluster=cluster,
        scope=scope,
        scope_key=scope_key,
        passing=counts.passing,
        failing=counts.failing,
        waived=counts.waived,
        failing_by_severity=dict(sorted(counts.by_severity.items())),
        score=counts.score(),
        computed_at=now,
    )
