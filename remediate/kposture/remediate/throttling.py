"""Throttling: how fast, how often and whether at all we may write (pure; time is passed in).

Four independent brakes, each a small state machine over a monotonic time in seconds that the
caller passes in, so tests drive them with a fake clock:

* :class:`TokenBucket` -- writes per second per cluster, with a burst.
* :class:`Backoff` -- per object: each write or failure on the same object pushes the next one
  further out (2 s, 6 s, 18 s ... capped), so we never fight a controller that reverts us.
* :class:`Breaker` -- global: opens after N failures within a window, or when more than X % of
  a cluster's objects were touched within the window; it stays open until a human resumes.
* :class:`KillSwitch` -- ``kposture remediation pause``: closed as soon as the pause record is
  seen, and also whenever our view of the control records is older than ``stale_after_s``, so
  that a pause can never be missed for longer than that (the promise is 5 s).
"""

from __future__ import annotations

import collections
import dataclasses

from kposture.runtime import settings as settings_mod


class TokenBucket:
    """A token bucket: ``rate_per_s`` tokens per second, at most ``burst`` held."""

    def __init__(self, *, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._updated = now

    def wait_s(self, now: float) -> float:
        """Seconds until a token is available, without taking one (0 when one is)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate_per_s

    def take(self, now: float) -> float:
        """Take a token and return 0, or return how many seconds until one is available."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s


class Backoff:
    """Per-object exponential backoff: ``initial_s``, times ``factor``, capped at ``max_s``.

    A streak ends when an object stays untouched for twice ``max_s``.
    """

    def __init__(self, *, initial_s: float, factor: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.factor = factor
        self.max_s = max_s
        self._streak: dict[str, tuple[int, float]] = {}  # key -> (touches, last touch)

    def delay_after(self, touches: int) -> float:
        """The wait after ``touches`` consecutive touches (0 before the first)."""
        if touches <= 0:
            return 0.0
        return min(self.max_s, self.initial_s * self.factor ** (touches - 1))

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until ``key`` may be written again (0 when it may be now)."""
        touches, last = self._streak.get(key, (0, now))
        if now - last > 2 * self.max_s:
            return 0.0
        return max(0.0, last + self.delay_after(touches) - now)

    def touched(self, key: str, now: float) -> None:
        """Record a write or a failed attempt on ``key``."""
        touches, last = self._streak.get(key, (0, now))
        if now - last > 2 * self.max_s:
            touches = 0
        self._streak[key] = (touches + 1, now)


class Breaker:
    """The global circuit breaker; once open it stays open until :meth:`reset`."""

    def __init__(
        self,
        *,
        max_failures: int,
        touch_percent: float,
        window_s: float,
        min_touches: int = 5,
    ) -> None:
        self.max_failures = max_failures
        self.touch_percent = touch_percent
        self.window_s = window_s
        # Below this many touched objects the percentage says little (3 of 10 is 30 %).
        self.min_touches = min_touches
        self._failures: collections.deque[float] = collections.deque()
        self._touches: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self._population: dict[str, int] = {}
        self.open_reason: str | None = None

    def population(self, cluster: str, objects: int) -> None:
        """How many objects of the fixable kinds ``cluster`` holds (refreshed by the service)."""
        self._population[cluster] = objects

    def failure(self, now: float) -> None:
        """Record a failed write (or a failed verification or rollout)."""
        self._failures.append(now)
        self._expire(now)
        if len(self._failures) >= self.max_failures and self.open_reason is None:
            self.open_reason = (
                f"{len(self._failures)} failures within {self.window_s:.0f}s "
                f"(limit {self.max_failures})"
            )

    def touched(self, cluster: str, uid: str, now: float) -> None:
        """Record a write to object ``uid`` of ``cluster``."""
        self._touches[cluster][uid] = now

    def admits(self, cluster: str, uid: str, now: float) -> bool:
        """Whether one more write to ``uid`` stays within the limits; opens the breaker if not.

        Checked before the write, so the write that would cross the touch limit never starts.
        """
        if self.open_reason is not None:
            return False
        self._expire(now)
        touched = self._touches[cluster]
        count = len(touched) + (0 if uid in touched else 1)
        population = self._population.get(cluster, 0)
        if count < self.min_touches or population <= 0:
            return True
        percent = 100.0 * count / population
        if percent <= self.touch_percent:
            return True
        self.open_reason = (
            f"writing {count} of {population} objects of {cluster} ({percent:.0f} %) "
            f"within {self.window_s:.0f}s would cross the limit of {self.touch_percent:.0f} %"
        )
        return False

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._failures and self._failures[0] < horizon:
            self._failures.popleft()
        for touches in self._touches.values():
            for uid in [u for u, at in touches.items() if at < horizon]:
                del touches[uid]

    def reset(self) -> None:
        """Close the breaker (a human resumed) and forget the failures counted so far."""
        self.open_reason = None
        self._failures.clear()
        self._touches.clear()


class KillSwitch:
    """Pause and resume; fails closed when the view of the control records goes stale."""

    def __init__(self, *, stale_after_s: float = 3.0) -> None:
        self.stale_after_s = stale_after_s
        self.paused = False
        self.reason = ""
        self._fresh_at: float | None = None

    def observe(self, *, paused: bool, reason: str = "") -> None:
        """Apply a pause or resume record read from the control topic."""
        self.paused = paused
        self.reason = reason

    def heartbeat(self, now: float) -> None:
        """The control-record reader is caught up as of ``now``."""
        self._fresh_at = now

    def blocked(self, now: float) -> str | None:
        """Why no write may start now, or None when writes may start."""
        if self.paused:
            return f"paused: {self.reason}" if self.reason else "paused"
        if self._fresh_at is None or now - self._fresh_at > self.stale_after_s:
            return "the pause state is not known to be current"
        return None


@dataclasses.dataclass(frozen=True)
class Admission:
    """Whether a write may start now: ``wait_s`` > 0 means try again later; ``refused`` never."""

    wait_s: float = 0.0
    refused: str | None = None


class Throttle:
    """All four brakes together, built from the remediate settings."""

    def __init__(self, settings: settings_mod.RemediateSettings) -> None:
        self._settings = settings
        self.buckets: dict[str, TokenBucket] = {}
        self.backoff = Backoff(
            initial_s=settings.backoff_initial_s,
            factor=settings.backoff_factor,
            max_s=settings.backoff_max_s,
        )
        self.breaker = Breaker(
            max_failures=settings.breaker_failures,
            touch_percent=settings.breaker_touch_percent,
            window_s=settings.breaker_window_s,
        )
        self.kill_switch = KillSwitch()

    def admit(self, cluster: str, uid: str, now: float) -> Admission:
        """Check every brake for one write to ``uid``; a token is taken only when all pass."""
        blocked = self.kill_switch.blocked(now)
        if blocked is not None:
            return Admission(refused=blocked)
        if not self.breaker.admits(cluster, uid, now):
            return Admission(refused=f"circuit breaker open: {self.breaker.open_reason}")
        wait = self.backoff.wait_s(f"{cluster}/{uid}", now)
        if wait > 0:
            return Admission(wait_s=wait)
        bucket = self.buckets.get(cluster)
        if bucket is None:
            bucket = self.buckets[cluster] = TokenBucket(
                rate_per_s=self._settings.patches_per_second, burst=self._settings.burst, now=now
            )
        wait = bucket.take(now)
        if wait > 0:
            return Admission(wait_s=wait)
        # Count the touch when the write starts, so concurrent writes cannot all slip under
        # the limit before the first of them finishes.
        self.breaker.touched(cluster, uid, now)
        return Admission()

    def probe(self, cluster: str, uid: str, now: float) -> Admission:
        """What :meth:`admit` would answer now, without taking a token or opening the breaker.

        Lets a caller park a finding that would have to wait, before it records anything.
        """
        blocked = self.kill_switch.blocked(now)
        if blocked is not None:
            return Admission(refused=blocked)
        if self.breaker.open_reason is not None:
            return Admission(refused=f"circuit breaker open: {self.breaker.open_reason}")
        wait = self.backoff.wait_s(f"{cluster}/{uid}", now)
        bucket = self.buckets.get(cluster)
        if bucket is not None:
            wait = max(wait, bucket.wait_s(now))
        return Admission(wait_s=wait)

    def wrote(self, cluster: str, uid: str, now: float) -> None:
        """Record a write that the apiserver accepted."""
        self.backoff.touched(f"{cluster}/{uid}", now)
        self.breaker.touched(cluster, uid, now)

    def failed(self, cluster: str, uid: str, now: float) -> None:
        """Record a write, verification or rollout that failed."""
        self.backoff.touched(f"{cluster}/{uid}", now)
        self.breaker.failure(now)
