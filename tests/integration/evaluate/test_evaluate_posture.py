"""Posture with two evaluate workers on the real broker: whole counts, whoever owns what."""

from __future__ import annotations

from typing import Any

import pytest
from evaluate_harness import Bus, running
from test_evaluate_app import baseline, pod

from kposture.schemas import posture, resources, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PODS = 12


def latest(records: list[tuple[str, Any]], scope: posture.Scope) -> posture.PostureSnapshot | None:
    """The last snapshot published for ``scope`` (one cluster, one namespace here)."""
    snapshots = [s for _, s in records if isinstance(s, posture.PostureSnapshot)]
    return next((s for s in reversed(snapshots) if s.scope is scope), None)


def shows(passing: int, failing: int) -> Any:
    """A predicate: the latest cluster and namespace snapshots count exactly that."""

    def check(records: list[tuple[str, Any]]) -> bool:
        for scope in (posture.Scope.CLUSTER, posture.Scope.NAMESPACE):
            snapshot = latest(records, scope)
            if snapshot is None or (snapshot.passing, snapshot.failing) != (passing, failing):
                return False
        return True

    return check


async def test_two_workers_publish_the_whole_posture_and_one_goes_on_alone(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Each worker owns some partitions; the published counts are the sum over all of them."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    scores = await reader(topics.Topic.POSTURE)
    async with running(settings) as first:
        async with running(settings) as second:
            await first.wait_assigned()  # the second's joining moved some of its partitions
            owned = [first.owned, second.owned]
            assert all(owned), f"each worker should own partitions: {owned}"
            for n in range(PODS):
                await bus.resource(resources.Change.ADDED, f"p{n}", pod(privileged=n % 2 == 0))
            await scores.until(shows(PODS // 2, PODS // 2))
        # The second worker left: the first owns everything and adds it up alone.
        await bus.resource(resources.Change.DELETED, "p0", pod(privileged=True))
        await scores.until(shows(PODS // 2, PODS // 2 - 1))
        records = await scores.settle()
    assert shows(PODS // 2, PODS // 2 - 1)(records)
