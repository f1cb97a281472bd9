"""Exceptions (waivers): documents that accept a failing check for a scope, until they expire.

An exception is data like a baseline. Whether it covers a finding is a pure function of the
finding's context and the current time, which the caller passes in, so an expired exception
stops applying by itself on the next evaluation (and the stream processor reopens the finding).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
from collections.abc import Callable, Iterable, Mapping

from kposture.evaluate.policy import baselines

Clock = Callable[[], dt.datetime]
"""Returns the current timezone-aware time; injected so tests control expiry."""


def system_clock() -> dt.datetime:
    """The wall clock in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class FindingContext:
    """What an exception's scope is matched against: where the finding is and which check."""

    cluster: str
    baseline: str
    check_id: str
    kind: str
    name: str
    namespace: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where an exception applies; empty tuples mean "any".

    ``names`` accepts shell-style patterns (``api-*``) because workloads often carry generated
    suffixes; clusters and namespaces are exact names.
    """

    clusters: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    object_selector: baselines.LabelSelector | None = None


@dataclasses.dataclass(frozen=True)
class Waiver:
    """An exception document: which checks it waives, where, why, and until when.

    ``checks`` holds check ids, optionally qualified by baseline (``pss-restricted/privileged``);
    ``*`` waives every check of the scope. ``expires`` is timezone-aware; ``None`` never expires
    (the loader requires an expiry unless the author opts out explicitly with ``expires: never``).
    """

    name: str
    scope: Scope
    checks: tuple[str, ...]
    reason: str
    owner: str
    ticket: str
    expires: dt.datetime | None

    def expired(self, now: dt.datetime) -> bool:
        """Whether the exception has stopped applying at ``now``."""
        return self.expires is not None and now >= self.expires

    def applies(self, context: FindingContext, now: dt.datetime) -> bool:
        """Whether this exception waives the finding described by ``context`` at ``now``."""
        if self.expired(now):
            return False
        if not self._covers_check(context.baseline, context.check_id):
            return False
        scope = self.scope
        if scope.clusters and context.cluster not in scope.clusters:
            return False
        if scope.namespaces and context.namespace not in scope.namespaces:
            return False
        if scope.kinds and context.kind not in scope.kinds:
            return False
        if scope.names and not any(fnmatch.fnmatchcase(context.name, p) for p in scope.names):
            return False
        return scope.object_selector is None or scope.object_selector.matches(context.labels)

    def _covers_check(self, baseline: str, check_id: str) -> bool:
        for entry in self.checks:
            qualifier, _, wanted = entry.rpartition("/")
            if qualifier and qualifier != baseline:
                continue
            if wanted in ("*", check_id):
                return True
        return False


def find_waiver(
    waivers: Iterable[Waiver], context: FindingContext, *, clock: Clock = system_clock
) -> Waiver | None:
    """The first exception that applies to ``context`` now, if any."""
    now = clock()
    for waiver in waivers:
        if waiver.applies(context, now):
            return waiver
    return None
