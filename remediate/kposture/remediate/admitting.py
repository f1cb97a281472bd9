"""Admitting: whether a write may start now -- wait a moment for it, or park the finding.

The throttle (pause, breaker, per-object backoff, token bucket) and the canary gate decide
when a write may start. A short wait (a token due within a second) is sat out in place. A long
one -- a backoff, a canary still rolling out, a pause -- becomes
:class:`errors.WouldWaitError` when the caller parks, so the worker goes on with other objects
and the finding comes back later. Without parking (direct calls, approvals) every wait is sat
out in place, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kposture.remediate import canarying, errors, planning, throttling

log = logging.getLogger(__name__)

REFUSED_POLL_S = 0.5
# A wait up to this long (the token bucket at its default rate) is sat out in place; a longer
# one (a backoff, a slow bucket) parks the finding when the caller asked for parking.
INLINE_WAIT_S = 1.0


def park_if_waiting(
    cluster: str,
    plan: planning.Plan,
    *,
    throttle: throttling.Throttle,
    canaries: canarying.CanaryGate,
    now: Callable[[], float],
    canary_wait_s: float,
) -> None:
    """Raise :class:`errors.WouldWaitError` if the write of ``plan`` could not start now.

    Side-effect free (no token is taken), so it can run before anything is recorded.
    """
    running = canaries.running(plan.canary_group)
    if running is not None:
        raise errors.WouldWaitError(
            f"waiting for the canary of {plan.canary_group}",
            retry_after_s=canary_wait_s,
            until=running,
        )
    held = throttle.probe(cluster, plan.target.uid, now())
    if held.refused is not None or held.wait_s > INLINE_WAIT_S:
        raise deferral(cluster, plan, held, throttle=throttle, now=now)


def deferral(
    cluster: str,
    plan: planning.Plan,
    held: throttling.Admission,
    *,
    throttle: throttling.Throttle,
    now: Callable[[], float],
) -> errors.WouldWaitError:
    """The parking of a write that ``held`` keeps from starting."""
    if held.refused is None:
        return errors.WouldWaitError(
            f"{plan.target.subject} may be written in {held.wait_s:.1f}s",
            retry_after_s=held.wait_s,
        )

    def ready() -> bool:  # in memory: a long pause must not cost the apiserver anything
        return throttle.probe(cluster, plan.target.uid, now()).refused is None

    return errors.WouldWaitError(held.refused, retry_after_s=REFUSED_POLL_S, ready=ready)


async def admitted(
    cluster: str,
    plan: planning.Plan,
    *,
    throttle: throttling.Throttle,
    park: bool,
    now: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """Return when the throttle lets this write start (a token is taken); park or wait."""
    announced = False
    while True:
        admission = throttle.admit(cluster, plan.target.uid, now())
        if admission.refused is None and admission.wait_s <= 0:
            return
        if park and (admission.refused is not None or admission.wait_s > INLINE_WAIT_S):
            raise deferral(cluster, plan, admission, throttle=throttle, now=now)
        if admission.refused is not None and not announced:
            log.warning("holding the write to %s: %s", plan.target.subject, admission.refused)
            announced = True
        await sleep(admission.wait_s or REFUSED_POLL_S)
