"""The evaluator's periodic work: posture publication and the expiry of exceptions.

Posture is published "on change" with a debounce: every ``tick_s`` the tally hands over the
scopes that changed since the last tick (cheap when nothing did), and every ``interval_s`` all
of them, so a dashboard that joins late sees the whole posture within an interval. An
exception that expires changes findings without any event, so a sweep is requested at the
moment it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kposture.evaluate import processing, tracking

POSTURE_TICK_S = 1.0
"""How often changed posture is published (the debounce of "on change")."""
EXPIRY_POLL_S = 5.0
"""Longest sleep between checks for an exception that expired or a policy change."""


async def publish_posture(
    collect: Callable[[bool], list[processing.Output]],
    *,
    interval_s: float,
    send: Callable[[processing.Output], None],
    tick_s: float = POSTURE_TICK_S,
) -> None:
    """Publish changed posture every ``tick_s`` and all of it every ``interval_s``.

    ``collect(only_changed)`` gives the records to publish.
    """
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(tick_s)
        full = time.monotonic() - last_full >= interval_s
        if full:
            last_full = time.monotonic()
        for output in collect(not full):
            send(output)


async def watch_expiry(
    processor: processing.Processor,
    *,
    clock: processing.Clock,
    on_expiry: Callable[[], None],
    poll_s: float = EXPIRY_POLL_S,
) -> None:
    """Call ``on_expiry`` when an exception in force expires (the policy may change meanwhile)."""
    while True:
        now = clock()
        expiry = tracking.next_expiry(processor.policy.waivers, now)
        delay = poll_s
        if expiry is not None:
            delay = min(delay, max((expiry - now).total_seconds(), 0.0))
        await asyncio.sleep(delay)
        if expiry is not None and clock() >= expiry:
            on_expiry()
