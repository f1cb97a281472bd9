"""Relist diffs, change classification and the backoff schedule."""

from __future__ import annotations

import random

from kposture.ingest import reconciling
from kposture.schemas import resources


def _obs(digest: str) -> reconciling.Observed:
    return reconciling.Observed({"metadata": {}}, digest)


def test_relist_finds_added_modified_unchanged_and_vanished() -> None:
    """Objects missing from a relist are vanished (synthetic deletes); the rest are classified."""
    known = {"a": _obs("1"), "b": _obs("2"), "gone": _obs("3")}
    listed = {"a": _obs("1"), "b": _obs("22"), "new": _obs("4")}
    plan = reconciling.reconcile(known, listed)
    assert plan.added == ["new"]
    assert plan.modified == ["b"]
    assert plan.unchanged == ["a"]
    assert plan.vanished == ["gone"]


def test_recreated_object_is_a_delete_and_an_add() -> None:
    """Same name, new uid: the old uid vanished and the new one was added."""
    plan = reconciling.reconcile({"old-uid": _obs("1")}, {"new-uid": _obs("1")})
    assert plan.vanished == ["old-uid"]
    assert plan.added == ["new-uid"]


def test_classify_suppresses_equal_digests() -> None:
    """A watch event with the known digest is noise; a new uid is added; otherwise modified."""
    assert reconciling.classify(None, "d") is resources.Change.ADDED
    assert reconciling.classify(_obs("d"), "d") is None
    assert reconciling.classify(_obs("d"), "e") is resources.Change.MODIFIED


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    """Delays stay in [c/2, c] with c doubling from the initial value to the cap."""
    backoff = reconciling.Backoff(initial_s=0.5, max_s=30.0, rng=random.Random(7))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not a fixed sequence
    assert backoff.failures == len(ceilings)


def test_backoff_resets_after_success_and_caps_non_retriable_errors() -> None:
    """A reset starts the schedule over; a non-retriable error waits near the cap at once."""
    backoff = reconciling.Backoff(initial_s=1.0, max_s=60.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    assert backoff.next_delay(retriable=False) >= 30.0


def test_backoff_never_overflows() -> None:
    """Thousands of failures still give the cap, not an overflow."""
    backoff = reconciling.Backoff(initial_s=0.5, max_s=30.0)
    assert backoff.ceiling(5000) == 30.0
