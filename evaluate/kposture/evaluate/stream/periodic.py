"""The evaluator's periodic work: posture publication and the expiry of exceptions, and the
supervision that keeps each of its background loops running (``keep_running``).

Posture is published "on change" with a debounce: every ``tick_s`` the tally hands over the
scopes that changed since the last tick (cheap when nothing did), and every ``interval_s`` all
of them, so a dashboard that joins late sees the whole posture within an interval. An
exception that expires changes findings without any event, so a sweep is requested at the
moment it expires.

A background loop that fails (a broker outage past a client's timeout, a bug) must not end
quietly: posture would stop, or a policy change would never be swept. ``keep_running``
restarts it with backoff and shows each failure under its name in ``/readyz`` (a non-critical
check: the stream itself goes on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kposture.evaluate.engine import tracking
from kposture.evaluate.stream import processing
from kposture.runtime import health

log = logging.getLogger(__name__)

POSTURE_TICK_S = 1.0
"""How often changed posture is published (the debounce of "on change")."""
EXPIRY_POLL_S = 5.0
"""Longest sleep between checks for an exception that expired or a policy change."""
RESTART_INITIAL_S = 1.0
"""The first wait before a failed background loop is restarted; it doubles on each failure."""
RESTART_MAX_S = 30.0
"""The longest wait before a failed background loop is restarted."""


async def keep_running(
    name: str,
    start: Callable[[], Awaitable[None]],
    *,
    readiness: health.Readiness,
    initial_s: float = RESTART_INITIAL_S,
    max_s: float = RESTART_MAX_S,
) -> None:
    """Await ``start()`` until cancelled, and again after each failure, with backoff.

    A loop that returns by itself is done. Each failure is logged and reported as the
    non-critical readiness check ``name``: not ok until the restart, then ok with the count of
    failures and the last error.
    """
    failures = 0
    delay = initial_s
    while True:
        started = time.monotonic()
        try:
            await start()
        except Exception as exc:
            failures += 1
            if time.monotonic() - started > max_s:
                delay = initial_s  # it ran well for a while: a new spell of failures
            last = f"{type(exc).__name__}: {exc}"[:200]
            log.exception("%s failed, restarting in %.1f s", name, delay)
            readiness.report(
                name, ok=False, detail=f"failed, restarting in {delay:g} s: {last}", critical=False
            )
        else:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_s)
        readiness.report(
            name,
            ok=True,
            detail=f"restarted after {failures} failure(s); last: {last}",
            critical=False,
        )


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
