"""Posture: counts and a score per cluster, namespace, baseline and control.

The stream processor tells the ``Tally`` what each object contributes (its passing checks and
its open findings) whenever an object's state changes, removing the old contribution first.
The tally keeps counts per outcome, not per object, so its size grows with clusters x
namespaces x checks rather than with objects, and it holds no policy data: the controls and
severity of *passing* checks are looked up when snapshots are built, with the policy in force
then. Counts are kept per source partition so a rebalance (or a re-evaluation sweep) can drop
and rebuild exactly one partition's share.

Scores weight each (object, check) pair by its severity; waived findings count neither for
nor against the score; ``error`` results count as failing (nobody can say they pass).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from kposture.evaluate import tracking
from kposture.schemas import common, posture

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


class _Key(NamedTuple):
    # A tuple, not a dataclass: keys are hashed and compared once per check per object
    # change, and tuple hashing runs in C.
    cluster: str
    namespace: str
    baseline: str
    check: str
    outcome: str  # pass | fail | waived
    severity: common.Severity | None  # None for passing checks: looked up when needed
    controls: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class Contribution:
    """What one object adds to the tally: its passing checks and its open findings."""

    cluster: str
    namespace: str
    passed: tuple[tuple[str, str], ...]
    open: tuple[tracking.OpenFinding, ...]

    def outcomes(self) -> Iterable[_Key]:
        """One key per (check, outcome)."""
        for baseline, check in self.passed:
            yield _Key(self.cluster, self.namespace, baseline, check, PASS, None, None)
        for finding in self.open:
            outcome = WAIVED if finding.waiver is not None else FAIL
            yield _Key(
                self.cluster,
                self.namespace,
                finding.baseline,
                finding.check,
                outcome,
                finding.severity,
                finding.controls,
            )


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
            self.by_severity[severity.value] = self.by_severity.get(severity.value, 0) + count

    def score(self) -> float:
        total = self.pass_weight + self.fail_weight
        return 100.0 if total == 0 else round(100.0 * self.pass_weight / total, 2)


class Tally:
    """Posture counts of the partitions this worker owns, updated object by object."""

    def __init__(self) -> None:
        self._parts: dict[int, collections.Counter[_Key]] = {}
        self._published: dict[str, tuple[object, ...]] = {}

    def add(self, partition: int, contribution: Contribution | None, *, sign: int = 1) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) one object's contribution."""
        if contribution is None:
            return
        counter = self._parts.setdefault(partition, collections.Counter())
        for key in contribution.outcomes():
            counter[key] += sign
            if counter[key] == 0:
                del counter[key]

    def replace(self, partition: int, old: Contribution | None, new: Contribution | None) -> None:
        """An object's state changed from ``old`` to ``new``."""
        if old is not None and new is not None and old == new:
            return  # most events change nothing that posture counts
        self.add(partition, old, sign=-1)
        self.add(partition, new)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or about to be rebuilt from the table)."""
        self._parts.pop(partition, None)

    def snapshots(
        self, meta: CheckMeta, *, now: dt.datetime, only_changed: bool
    ) -> list[posture.PostureSnapshot]:
        """Snapshots of every scope; with ``only_changed``, those that differ from the last."""
        scopes: dict[tuple[str, posture.Scope, str], _Counts] = {}
        for counter in self._parts.values():
            for key, count in counter.items():
                severity, controls = key.severity, key.controls
                if severity is None or controls is None:
                    found = meta(key.baseline, key.check)
                    if found is None:
                        continue  # the check left the policy; the sweep will drop it
                    severity, controls = found
                wanted = [
                    (key.cluster, posture.Scope.CLUSTER, key.cluster),
                    (key.cluster, posture.Scope.BASELINE, key.baseline),
                ]
                if key.namespace:
                    wanted.append((key.cluster, posture.Scope.NAMESPACE, key.namespace))
                wanted.extend((key.cluster, posture.Scope.CONTROL, c) for c in controls)
                for where in wanted:
                    scopes.setdefault(where, _Counts()).add(key.outcome, severity, count)
        out: list[posture.PostureSnapshot] = []
        current: dict[str, tuple[object, ...]] = {}
        for (cluster, scope, scope_key), counts in sorted(scopes.items()):
            snapshot = posture.PostureSnapshot(
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
            signature = _signature(snapshot)
            current[snapshot.key] = signature
            if not only_changed or self._published.get(snapshot.key) != signature:
                out.append(snapshot)
        # A scope that emptied out (its last object deleted) is published once as all zero.
        for gone in self._published.keys() - current.keys():
            cluster, scope_name, scope_key = gone.split("/", 2)
            out.append(
                posture.PostureSnapshot(
                    cluster=cluster,
                    scope=posture.Scope(scope_name),
                    scope_key=scope_key,
                    passing=0,
                    failing=0,
                    waived=0,
                    failing_by_severity={},
                    score=100.0,
                    computed_at=now,
                )
            )
        self._published = current
        return out


def contribution(
    *,
    cluster: str,
    namespace: str,
    passed: Iterable[tuple[str, str]],
    open_findings: Iterable[tracking.OpenFinding],
) -> Contribution:
    """The contribution of one object's state."""
    return Contribution(cluster, namespace, tuple(passed), tuple(open_findings))


def check_index(
    entries: Iterable[tuple[str, str, common.Severity, Iterable[str]]],
) -> Mapping[tuple[str, str], tuple[common.Severity, tuple[str, ...]]]:
    """An index ``(baseline, check) -> (severity, controls)`` for :class:`CheckMeta`."""
    return {(b, c): (severity, tuple(controls)) for b, c, severity, controls in entries}


def _signature(snapshot: posture.PostureSnapshot) -> tuple[object, ...]:
    return (
        snapshot.passing,
        snapshot.failing,
        snapshot.waived,
        tuple(snapshot.failing_by_severity.items()),
        snapshot.score,
    )
