"""Workers joining and leaving while events stream in: nothing lost, nothing told twice.

Each join or leave is a rebalance: every worker's partitions are revoked, assigned again
(some to another worker), the tables recovered and swept. Events that arrive meanwhile must
each be evaluated once by their partition's owner, the posture must add up to every object,
and a finding must not open twice.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from evaluate_harness import Bus, running
from test_evaluate_app import baseline, pod, transitions
from test_evaluate_posture import latest, shows

from kposture.schemas import posture, resources, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PODS = 240
CHURN = 3
"""Rounds of a second worker joining, a third joining, and both leaving."""


async def test_objects_written_while_workers_join_and_leave_are_all_counted_once(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Pods come in a steady stream while a second and a third worker join and leave."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    scores = await reader(topics.Topic.POSTURE)
    found = await reader(topics.Topic.FINDINGS)
    expected = {f"c1/uid-p{n}" for n in range(PODS)}
    async with running(settings) as first:

        async def produce() -> None:
            for n in range(PODS):
                await bus.resource(resources.Change.ADDED, f"p{n}", pod(privileged=n % 2 == 0))
                await asyncio.sleep(0.02)

        producing = asyncio.create_task(produce())
        try:
            for _ in range(CHURN):
                async with running(settings):
                    await asyncio.sleep(1.0)
                    async with running(settings):
                        await asyncio.sleep(1.0)
            await producing
        finally:
            producing.cancel()
        # Alone again, the first worker owns every partition and recovers all of the table.
        for _ in range(120):
            missing = expected - {key.decode() for key in first._objects.data}
            if not missing:
                break
            await asyncio.sleep(0.5)
        await scores.until(shows(PODS // 2, PODS // 2), timeout_s=60.0)
        snapshots = await scores.settle(3.0)
        records = await found.until(lambda r: len(transitions(r)) >= PODS // 2)
        records = await found.settle(3.0)
    assert not missing, f"never stored: {sorted(missing)}"
    for scope in (posture.Scope.CLUSTER, posture.Scope.NAMESPACE):
        last = latest(snapshots, scope)  # the last word, not one seen on the way
        assert last is not None
        assert (last.passing, last.failing) == (PODS // 2, PODS // 2), last
    told = collections.Counter(transitions(records))
    assert set(told) == {(f"uid-p{n}", "privileged", "opened") for n in range(0, PODS, 2)}
    twice = {finding: count for finding, count in told.items() if count > 1}
    assert not twice, f"findings opened more than once: {twice}"
