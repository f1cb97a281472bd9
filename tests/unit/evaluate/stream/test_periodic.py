"""``periodic.keep_running``: a failed background loop is restarted, and shows in readiness."""

from __future__ import annotations

import asyncio

import pytest

from kposture.evaluate.stream import periodic
from kposture.runtime import health


async def test_a_failing_loop_is_restarted_with_backoff_and_reported() -> None:
    readiness = health.Readiness()
    starts = 0
    running = asyncio.Event()

    async def loop() -> None:
        nonlocal starts
        starts += 1
        if starts <= 2:
            raise ConnectionError(f"broker gone ({starts})")
        running.set()
        await asyncio.Event().wait()  # runs until cancelled

    kept = asyncio.create_task(
        periodic.keep_running("evaluate-posture", loop, readiness=readiness, initial_s=0.001)
    )
    await asyncio.wait_for(running.wait(), timeout=5)
    assert starts == 3
    check = readiness.details()["evaluate-posture"]
    assert check["ok"] is True
    assert "restarted after 2 failure(s)" in str(check["detail"])
    assert "broker gone (2)" in str(check["detail"])
    kept.cancel()
    with pytest.raises(asyncio.CancelledError):
        await kept


async def test_while_it_waits_to_restart_the_loop_is_not_ok_but_the_service_stays_ready() -> None:
    readiness = health.Readiness()
    readiness.report("kafka", ok=True)

    async def broken() -> None:
        raise ConnectionError("broker gone")

    kept = asyncio.create_task(
        periodic.keep_running("evaluate-sweeps", broken, readiness=readiness, initial_s=60)
    )
    for _ in range(100):
        if "evaluate-sweeps" in readiness.details():
            break
        await asyncio.sleep(0.01)
    check = readiness.details()["evaluate-sweeps"]
    assert check["ok"] is False
    assert str(check["detail"]).startswith("failed, restarting in 60 s: ConnectionError")
    assert readiness.ready()  # a non-critical check: the stream itself goes on
    kept.cancel()
    with pytest.raises(asyncio.CancelledError):
        await kept


async def test_a_loop_that_ends_by_itself_is_not_restarted() -> None:
    readiness = health.Readiness()
    starts = 0

    async def once() -> None:
        nonlocal starts
        starts += 1

    await asyncio.wait_for(periodic.keep_running("once", once, readiness=readiness), timeout=5)
    assert starts == 1
    assert "once" not in readiness.details()


async def test_the_wait_before_a_restart_doubles_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(periodic.asyncio, "sleep", sleep)
    starts = 0

    async def failing() -> None:
        nonlocal starts
        starts += 1
        if starts > 6:
            return
        raise RuntimeError("bug")

    await periodic.keep_running(
        "x", failing, readiness=health.Readiness(), initial_s=1.0, max_s=8.0
    )
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
