"""Throttling with a fake clock: token bucket, backoff, circuit breaker and the kill switch."""

from __future__ import annotations

from kposture.remediate import throttling
from kposture.runtime import settings


def test_the_token_bucket_allows_a_burst_then_one_write_per_second() -> None:
    """Burst 5 at 1/s: five writes at once, then one per second."""
    bucket = throttling.TokenBucket(rate_per_s=1.0, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == 1.0
    assert bucket.take(0.5) == 0.5
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) > 0


def test_backoff_grows_from_two_seconds_by_three_and_caps_at_five_minutes() -> None:
    """2 s, 6 s, 18 s, 54 s, 162 s, then 300 s."""
    backoff = throttling.Backoff(initial_s=2.0, factor=3.0, max_s=300.0)
    assert [backoff.delay_after(n) for n in range(8)] == [0, 2, 6, 18, 54, 162, 300, 300]
    backoff.touched("c/u", 0.0)
    assert backoff.wait_s("c/u", 0.0) == 2.0
    assert backoff.wait_s("c/u", 2.0) == 0.0
    backoff.touched("c/u", 2.0)
    assert backoff.wait_s("c/u", 3.0) == 5.0
    assert backoff.wait_s("other", 3.0) == 0.0


def test_a_backoff_streak_ends_after_a_quiet_period() -> None:
    """An object untouched for twice the cap starts again at 2 s."""
    backoff = throttling.Backoff(initial_s=2.0, factor=3.0, max_s=300.0)
    for t in (0.0, 10.0, 20.0):
        backoff.touched("k", t)
    backoff.touched("k", 1000.0)
    assert backoff.wait_s("k", 1000.0) == 2.0


def test_the_breaker_opens_after_n_failures_within_the_window() -> None:
    """Failures older than the window do not count; N within it open the breaker."""
    breaker = throttling.Breaker(max_failures=3, touch_percent=20, window_s=60)
    breaker.failure(0.0)
    breaker.failure(10.0)
    breaker.failure(100.0)  # the first two have left the window
    assert breaker.open_reason is None
    breaker.failure(110.0)
    breaker.failure(120.0)
    assert breaker.open_reason is not None
    assert "3 failures" in breaker.open_reason
    breaker.reset()
    assert breaker.open_reason is None


def test_the_breaker_refuses_the_write_that_would_touch_too_many_objects() -> None:
    """With 20 % of 25 objects, the sixth distinct object within the window is refused."""
    breaker = throttling.Breaker(max_failures=5, touch_percent=20, window_s=600)
    breaker.population("c1", 25)
    for n in range(5):
        assert breaker.admits("c1", f"u{n}", float(n))
        breaker.touched("c1", f"u{n}", float(n))
    assert breaker.admits("c1", "u0", 6.0)  # the same object again is no new touch
    assert not breaker.admits("c1", "u5", 6.0)
    assert breaker.open_reason is not None
    assert "c1" in breaker.open_reason


def test_pause_stops_writes_as_soon_as_it_is_seen() -> None:
    """A pause record read by the ledger blocks the next admission."""
    throttle = throttling.Throttle(settings.RemediateSettings())
    throttle.kill_switch.heartbeat(0.0)
    assert throttle.admit("c1", "u1", 0.1).refused is None
    throttle.kill_switch.observe(paused=True, reason="incident 42")
    admission = throttle.admit("c1", "u2", 0.2)
    assert admission.refused == "paused: incident 42"
    throttle.kill_switch.observe(paused=False)
    assert throttle.admit("c1", "u2", 0.3).refused is None


def test_writes_stop_within_five_seconds_when_the_pause_state_cannot_be_read() -> None:
    """If the control records go unread (a pause might be missed), writes stop after 3 s."""
    switch = throttling.KillSwitch()
    switch.heartbeat(100.0)
    assert switch.blocked(102.9) is None
    assert switch.blocked(103.1) is not None
    assert switch.stale_after_s < 5.0


def test_backoff_and_tokens_delay_rather_than_refuse() -> None:
    """A second write to the same object waits for its backoff, and is not refused."""
    throttle = throttling.Throttle(settings.RemediateSettings())
    throttle.kill_switch.heartbeat(0.0)
    assert throttle.admit("c1", "u1", 0.0) == throttling.Admission()
    throttle.wrote("c1", "u1", 0.0)
    throttle.kill_switch.heartbeat(1.0)
    assert throttle.admit("c1", "u1", 1.0) == throttling.Admission(wait_s=1.0)
