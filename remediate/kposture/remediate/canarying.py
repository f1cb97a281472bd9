"""Canarying: the first disruptive fix of a group goes alone; the rest wait for its outcome.

A group is one check in one cluster (``planning.Plan.canary_group``). The first plan of a group
becomes its canary; later plans wait until the canary is verified healthy (then they proceed)
or failed (then they are escalated, not applied). A canary that has to be planned again gives
up its role, and one of the waiting plans takes it. Outcomes last for the process's life.
"""

from __future__ import annotations

import asyncio


class CanaryGate:
    """The canary state of every group."""

    def __init__(self) -> None:
        self._groups: dict[str, asyncio.Future[bool | None]] = {}

    async def role(self, group: str) -> bool | None:
        """None: go ahead as the canary (or no canary is needed); True: the canary passed,
        go ahead; False: the canary failed, do not apply.
        """
        if not group:
            return None
        while True:
            pending = self._groups.get(group)
            if pending is None:
                self._groups[group] = asyncio.get_running_loop().create_future()
                return None
            outcome = await asyncio.shield(pending)
            if outcome is not None:
                return outcome
            # The canary gave up its role: try to take it.

    def settle(self, group: str, role: bool | None, *, ok: bool | None) -> None:
        """Publish the canary's outcome; ``ok=None`` gives up the role. Non-canaries: no-op."""
        pending = self._groups.get(group)
        if role is not None or pending is None or pending.done():
            return
        if ok is None:
            del self._groups[group]
        pending.set_result(ok)

    def running(self, group: str) -> asyncio.Future[bool | None] | None:
        """The outcome-to-be of the group's canary while it runs, else None (never blocks).

        A finding that would have to wait for it is parked on this future instead.
        """
        pending = self._groups.get(group) if group else None
        return pending if pending is not None and not pending.done() else None

    def state(self, group: str) -> bool | None:
        """True/False once the group's canary passed/failed, else None."""
        pending = self._groups.get(group)
        return pending.result() if pending is not None and pending.done() else None
