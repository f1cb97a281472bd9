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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import orjson

from kposture.evaluate.engine import tracking
from kposture.evaluate.posture import summing
from kposture.evaluate.stream import watched_dict
from kposture.schemas import codec, common, posture

PASS = "pass"  # noqa: S105 - an outcome name, not a password
FAIL = "fail"
WAIVED = "waived"

CheckMeta = Callable[[str, str], tuple[common.Severity, tuple[str, ...]] | None]
"""Looks up ``(severity, controls)`` of ``(baseline, check)`` in the policy in force."""

_Scope = tuple[str, posture.Scope, str]  # (cluster, scope, scope key)
_Failing = tuple[str, str, str, common.Severity, tuple[str, ...]]
_Item = tuple[str, str] | _Failing  # a passing (baseline, check), or a failing outcome


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
    failing: tuple[_Failing, ...]

    def outcomes(self) -> Iterator[_Key]:
        """One key per (check, outcome)."""
        cluster, namespace = self.cluster, self.namespace
        for baseline, check in self.passed:
            yield _Key(cluster, namespace, baseline, check, PASS, None, None)
        for baseline, check, outcome, severity, controls in self.failing:
            yield _Key(cluster, namespace, baseline, check, outcome, severity, controls)


@dataclasses.dataclass(slots=True)
class _Counts:
    passing: int = 0
    failing: int = 0
    waived: int = 0
    by_severity: dict[str, int] = dataclasses.field(default_factory=dict)
    pass_weight: float = 0.0
    fail_weight: float = 0.0

    def add(self, outcome: str, severity: common.Severity, count: int) -> None:
        weight = summing.WEIGHT[severity] * count
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

    def raw(self) -> tuple[object, ...]:
        # The counts and the weights: what adds up across partitions.
        return (
            self.passing,
            self.failing,
            self.waived,
            tuple(sorted(self.by_severity.items())),
            self.pass_weight,
            self.fail_weight,
        )

    def signature(self) -> tuple[object, ...]:
        return (*self.raw()[:4], self.score())  # what a snapshot shows


Share = tuple[int, _Scope, _Counts | None]
"""One partition's counts in one scope; ``None`` once nothing of the partition counts there."""


class Tally:
    """Posture counts of the partitions this worker owns, updated object by object.

    Counts are kept per partition *and* scope: a partition's *share* of a scope. Shares are
    what a worker publishes (``shares``); whoever adds up every partition's share of a scope
    (``Board``) gets the scope's posture however the partitions are spread over workers.
    ``snapshots`` does that for this worker's partitions alone.
    """

    def __init__(self, meta: CheckMeta | None = None) -> None:
        self._parts: dict[int, collections.Counter[Contribution]] = {}
        self._pending: collections.Counter[tuple[int, Contribution]] = collections.Counter()
        self._meta: CheckMeta = meta or (lambda baseline, check: None)
        self._scopes: dict[tuple[int, _Scope], _Counts] = {}
        self._dirty: set[tuple[int, _Scope]] = set()
        self._emitted: dict[tuple[int, _Scope], tuple[object, ...]] = {}
        self._local = Shares()
        self._board = Board()

    def use(self, meta: CheckMeta) -> None:
        """Take the policy in force: re-aggregate every scope with its checks' metadata."""
        self._meta = meta
        self._dirty.update(self._scopes)
        self._scopes = {}
        self._pending = collections.Counter()
        for partition, counter in self._parts.items():
            self._pending.update({(partition, c): n for c, n in counter.items()})

    def add(self, partition: int, contribution: Contribution | None, *, sign: int = 1) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) one object's contribution."""
        if contribution is not None:
            self._count(partition, contribution, sign)

    def replace(self, partition: int, old: Contribution | None, new: Contribution | None) -> None:
        """An object's state changed from ``old`` to ``new``."""
        if old == new:
            return  # most events change nothing that posture counts
        if old is not None:
            self._count(partition, old, -1)
        if new is not None:
            self._count(partition, new, 1)

    def drop(self, partition: int) -> None:
        """Empty a partition's counts, before it is rebuilt from the table."""
        for contribution, count in self._parts.pop(partition, {}).items():
            self._pending[(partition, contribution)] -= count

    def forget(self, partition: int) -> None:
        """Forget a revoked partition without a word: its share is its new owner's to tell."""
        self._parts.pop(partition, None)
        self._pending = collections.Counter(
            {key: n for key, n in self._pending.items() if key[0] != partition}
        )
        for table in (self._scopes, self._emitted):
            for key in [key for key in table if key[0] == partition]:
                del table[key]
        self._dirty = {key for key in self._dirty if key[0] != partition}

    def scopes_of(self, partition: int) -> set[_Scope]:
        """The scopes a partition has a share of (as of the last ``shares``)."""
        return {where for p, where in self._scopes if p == partition}

    def shares(self, partitions: Collection[int] | None = None) -> list[Share]:
        """The shares that changed since the last call (``None``: the share is gone).

        With ``partitions``, only those partitions' shares: the others' changes wait for a
        later call that asks for them (a worker tells only the shares that it may tell).
        """
        self._aggregate()
        out: list[Share] = []
        if partitions is None:
            taken, self._dirty = self._dirty, set()
        else:
            taken = {key for key in self._dirty if key[0] in partitions}
            self._dirty -= taken
        for where in sorted(taken):
            counts = self._scopes.get(where)
            if counts is None:
                if self._emitted.pop(where, None) is not None:
                    out.append((where[0], where[1], None))
                continue
            # Weights, not the score: scores of shares do not add up, and a policy change can
            # move both weights of a share and leave its score as it was.
            signature = counts.raw()
            if self._emitted.get(where) != signature:
                self._emitted[where] = signature
                out.append((where[0], where[1], counts))
        return out

    def snapshots(self, *, now: dt.datetime, only_changed: bool) -> list[posture.PostureSnapshot]:
        """Snapshots of this worker's scopes; with ``only_changed``, those that changed.

        A scope that emptied out (its last object deleted) is published once as all zero.
        """
        for partition, where, counts in self.shares():
            self._local.put(partition, where, counts)
        return self._board.snapshots(self._local, now=now, only_changed=only_changed)

    def _count(self, partition: int, contribution: Contribution, sign: int) -> None:
        counter = self._parts.get(partition)
        if counter is None:
            counter = self._parts[partition] = collections.Counter()
        left = counter[contribution] + sign
        if left:
            counter[contribution] = left
        else:
            del counter[contribution]
        self._pending[(partition, contribution)] += sign

    def _aggregate(self) -> None:
        # Removals first: every count they take away is there, so no scope goes below zero
        # and a scope that empties out is one that nothing falls in any more.
        # An object that changed replaced one contribution by another that mostly holds the
        # same items (passing checks, failing outcomes): net the items per partition, cluster
        # and namespace first, so only the ones that moved reach scopes. Items are counted by
        # ``Counter.update`` (a loop in C) and netted with a set operation (in C too).
        # Nothing derived from the items is kept between two calls: they number namespaces x
        # checks x outcomes, and remembering them (or their scopes) cost more memory than the
        # objects table.
        gained: dict[tuple[int, str, str], collections.Counter[_Item]] = {}
        lost: dict[tuple[int, str, str], collections.Counter[_Item]] = {}
        for (partition, contribution), change in self._pending.items():
            if not change:
                continue
            group = (partition, contribution.cluster, contribution.namespace)
            side = gained if change > 0 else lost
            counter = side.get(group)
            if counter is None:
                counter = side[group] = collections.Counter()
            if change in (1, -1):
                counter.update(contribution.passed)
                counter.update(contribution.failing)
            else:  # objects alike (or a rebuilt partition): one pass, not one per object
                for passed in contribution.passed:
                    counter[passed] += abs(change)
                for failing in contribution.failing:
                    counter[failing] += abs(change)
        self._pending = collections.Counter()
        moved: list[tuple[int, tuple[int, str, str], _Item]] = []
        nothing: collections.Counter[_Item] = collections.Counter()
        for group in gained.keys() | lost.keys():
            plus, minus = gained.get(group, nothing), lost.get(group, nothing)
            if plus and minus:
                items: Iterable[_Item] = {item for item, _ in plus.items() ^ minus.items()}
            else:
                items = plus or minus
            for item in items:
                change = plus.get(item, 0) - minus.get(item, 0)
                if change:
                    moved.append((change, group, item))
        moved.sort(key=_first)
        scopes = self._scopes
        dirty = self._dirty
        meta_of = self._meta
        for change, (partition, cluster, namespace), item in moved:
            if len(item) == 2:  # a passing check: its severity and controls are the policy's
                baseline, check = item
                outcome = PASS
                meta = meta_of(baseline, check)
                if meta is None:
                    continue  # the check left the policy; the sweep will drop it
                severity, controls = meta
            else:
                baseline, check, outcome, severity, controls = item
            for scope in _scopes_of(cluster, namespace, baseline, controls):
                where = (partition, scope)
                counts = scopes.get(where)
                if counts is None:
                    counts = scopes[where] = _Counts()
                counts.add(outcome, severity, change)
                if counts.empty():
                    del scopes[where]
                dirty.add(where)


def _first(item: tuple[int, Any, Any]) -> int:
    return item[0]


def _scopes_of(
    cluster: str, namespace: str, baseline: str, controls: tuple[str, ...]
) -> list[_Scope]:
    # The scopes an item of a contribution counts in.
    scopes: list[_Scope] = [
        (cluster, posture.Scope.CLUSTER, cluster),
        (cluster, posture.Scope.BASELINE, baseline),
    ]
    if namespace:
        scopes.append((cluster, posture.Scope.NAMESPACE, namespace))
    scopes.extend((cluster, posture.Scope.CONTROL, control) for control in controls)
    return scopes


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
            _outcome(
                (
                    f.baseline,
                    f.check,
                    WAIVED if f.waiver is not None else FAIL,
                    f.severity,
                    f.controls,
                )
            )
            for f in open_findings
        ),
    )


_Outcome = tuple[str, str, str, common.Severity, tuple[str, ...]]
_OUTCOMES: dict[_Outcome, _Outcome] = {}
_OUTCOMES_KEPT = 65_536


def _outcome(item: _Outcome) -> _Outcome:
    # One shared tuple per distinct outcome: the tally keeps a contribution per namespace
    # and outcome pattern, and their findings' outcomes are the same few tuples.
    found = _OUTCOMES.get(item)
    if found is None:
        if len(_OUTCOMES) >= _OUTCOMES_KEPT:
            _OUTCOMES.clear()
        found = _OUTCOMES[item] = item
    return found


def share_key(partition: int, where: _Scope) -> bytes:
    """The table key of one partition's share of a scope."""
    cluster, scope, scope_key = where
    return codec.canonical([cluster, str(scope), scope_key, partition])


def parse_share_key(key: bytes) -> tuple[int, _Scope] | None:
    """``(partition, scope)`` of a share key; ``None`` for anything else."""
    try:
        cluster, scope, scope_key, partition = orjson.loads(key)
        return int(partition), (str(cluster), posture.Scope(scope), str(scope_key))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # not a share key: ignored


def _scope_of(key: bytes) -> _Scope | None:
    parsed = parse_share_key(key)
    return None if parsed is None else parsed[1]


def encode_counts(counts: _Counts) -> bytes:
    """The table value of a share."""
    return codec.canonical(
        [
            counts.passing,
            counts.failing,
            counts.waived,
            counts.by_severity,
            counts.pass_weight,
            counts.fail_weight,
        ]
    )


def _add_encoded(total: _Counts, raw: bytes) -> None:
    passing, failing, waived, by_severity, pass_weight, fail_weight = orjson.loads(raw)
    total.passing += passing
    total.failing += failing
    total.waived += waived
    total.pass_weight += pass_weight
    total.fail_weight += fail_weight
    for severity, count in by_severity.items():
        total.by_severity[severity] = total.by_severity.get(severity, 0) + count


class Shares(watched_dict.Watched):
    """Every partition's shares of every scope: the data of the posture-shares table.

    Each worker writes the shares of the partitions it owns (``Tally.shares``); the table
    holds every partition's, so adding them up per scope gives the whole posture. It knows
    the keys of each scope and which scopes changed since ``take_changed``, however it was
    written (this worker's writes, or another worker's records read from the changelog).
    """

    def __init__(self, initial: Mapping[bytes, bytes] | None = None) -> None:
        self._by_scope: dict[_Scope, dict[bytes, None]] = {}
        self._changed: set[_Scope] = set()
        super().__init__(initial)

    def put(self, partition: int, where: _Scope, counts: _Counts | None) -> bytes | None:
        """Write one share (``None``: delete it); returns the value written."""
        key = share_key(partition, where)
        if counts is None:
            self.pop(key, None)
            return None
        value = self[key] = encode_counts(counts)
        return value

    def take_changed(self) -> set[_Scope]:
        """The scopes whose shares changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def scopes(self) -> set[_Scope]:
        """Every scope that some partition has a share of."""
        return set(self._by_scope)

    def total(self, where: _Scope) -> _Counts:
        """The sum of every partition's share of ``where``."""
        total = _Counts()
        for key in self._by_scope.get(where, ()):
            raw = self.get(key)
            if raw is not None:
                _add_encoded(total, raw)
        return total

    def _added(self, key: bytes, value: Any) -> None:
        where = _scope_of(key)
        if where is not None:
            self._changed.add(where)
            if value is not None:
                self._by_scope.setdefault(where, {})[key] = None

    def _removed(self, key: bytes, value: Any) -> None:
        where = _scope_of(key)
        if where is not None:
            self._changed.add(where)
            keys = self._by_scope.get(where)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._by_scope[where]


class Board:
    """Turns shares into snapshots: per scope, the sum of its shares, published on change."""

    def __init__(self) -> None:
        self._published: dict[_Scope, tuple[object, ...]] = {}

    def snapshots(
        self, shares: Shares, *, now: dt.datetime, only_changed: bool
    ) -> list[posture.PostureSnapshot]:
        """Snapshots of the scopes whose shares changed (or of all, without ``only_changed``).

        A scope with no share left is published once as all zero.
        """
        wanted = shares.take_changed()
        if not only_changed:
            wanted |= shares.scopes()
        out: list[posture.PostureSnapshot] = []
        for where in sorted(wanted):
            counts = shares.total(where)
            if counts.empty():
                if self._published.pop(where, None) is not None:
                    out.append(summing.snapshot(where, counts, now=now))
                continue
            signature = counts.signature()
            if only_changed and self._published.get(where) == signature:
                continue
            self._published[where] = signature
            out.append(summing.snapshot(where, counts, now=now))
        return out
