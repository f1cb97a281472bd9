"""Deciding what to publish: per watch event, after a relist, and how long to back off.

The watchers keep, per (cluster, kind), the last normalised state and digest of every object
they know. This module holds the decisions made on that state, as pure functions, so they can
be tested without a cluster: whether a watch event is a change or noise, what a relist means
(new, changed, unchanged and vanished objects, the last of which become synthetic deletes),
and the retry schedule (exponential, with jitter, capped).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

from kposture.schemas import resources


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """The last published (or suppressed) state of one object: normalised, and its digest."""

    object: dict[str, Any]
    digest: str


@dataclasses.dataclass(frozen=True, slots=True)
class Reconciliation:
    """What a relist found compared with what was known (each a list of uids, sorted).

    ``vanished`` objects get a synthetic delete carrying their last known state.
    """

    added: list[str]
    modified: list[str]
    unchanged: list[str]
    vanished: list[str]


def classify(previous: Observed | None, digest: str) -> resources.Change | None:
    """The change an added or modified watch event means, or None if only noise changed."""
    if previous is None:
        return resources.Change.ADDED
    if previous.digest == digest:
        return None
    return resources.Change.MODIFIED


def reconcile(known: Mapping[str, Observed], listed: Mapping[str, Observed]) -> Reconciliation:
    """Compare a fresh list with the known state, by uid.

    A uid is the identity: an object deleted and re-created under the same name has a new uid,
    so it is a vanished object plus an added one, exactly what consumers must see.
    """
    added, modified, unchanged = [], [], []
    for uid in sorted(listed):
        previous = known.get(uid)
        if previous is None:
            added.append(uid)
        elif previous.digest == listed[uid].digest:
            unchanged.append(uid)
        else:
            modified.append(uid)
    vanished = sorted(uid for uid in known if uid not in listed)
    return Reconciliation(added=added, modified=modified, unchanged=unchanged, vanished=vanished)


class Backoff:
    """Exponential backoff with jitter and a cap.

    The n-th consecutive failure waits a uniformly random time in ``[d/2, d]`` where
    ``d = min(cap, initial * 2**n)``: the jitter spreads the retries of many watchers that
    failed together (an apiserver restart), and the lower half-bound keeps the schedule growing.
    Non-retriable errors (401, 403) wait the cap straight away: they need a human, not a storm.
    """

    def __init__(self, *, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._initial = initial_s
        self._max = max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last :meth:`reset`."""
        return self._failures

    def next_delay(self, *, retriable: bool = True) -> float:
        """The time to wait after one more failure, in seconds."""
        ceiling = self._max if not retriable else self.ceiling(self._failures)
        self._failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def ceiling(self, failures: int) -> float:
        """The upper bound of the wait after ``failures`` earlier consecutive failures."""
        # min() before the power would overflow after ~1000 failures; the cap comes first.
        exponent = min(failures, 64)
        return float(min(self._max, self._initial * 2**exponent))

    def reset(self) -> None:
        """Forget the failures (after a success)."""
        self._failures = 0
