"""The in-process evaluate benchmark: what it measures and how it reports it."""

from __future__ import annotations

import statistics

import pytest

from kposture.evaluate import benchmarking


def test_the_in_process_bench_measures_every_phase_over_the_events_it_was_given() -> None:
    report = benchmarking.run(objects=400, events=500, seed=3)
    assert report["setup"]["objects"] == 400
    assert report["setup"]["checks"] > 50  # the full built-in set
    assert report["cold_load"]["events"] == 400
    assert report["evaluate"]["events"] == report["evaluate_changed_only"]["events"] == 500
    assert report["evaluate_unchanged_only"]["events"] == 500
    assert sum(report["evaluate"]["mix"].values()) == 500
    # A cold start of 400 objects of the synthetic fleet opens findings.
    assert report["cold_load"]["outputs"] > 0
    phases = ("cold_load", "evaluate", "evaluate_changed_only", "evaluate_unchanged_only")
    for name in (*phases, "engine"):
        phase = report[name]
        assert phase["cpu_seconds"] > 0
        # cpu_seconds is rounded to 0.1 ms in the report, which moves a short phase's rate.
        cpu, events = phase["cpu_seconds"], phase["events"]
        low, high = events / (cpu + 5e-5), events / max(cpu - 5e-5, 1e-9)
        assert low * 0.99 <= phase["events_per_cpu_second"] <= high * 1.01
        assert 0 < phase["p50_us"] <= phase["p99_us"] <= phase["max_us"]
        rounds = phase["rounds_events_per_cpu_second"]
        assert len(rounds) == benchmarking.ROUNDS
        assert phase["median_round_events_per_cpu_second"] == statistics.median(rounds)
    assert report["memory"]["tracked_objects"] == 400
    assert report["memory"]["bytes_per_tracked_object"] > 100
    state = report["memory"]["state"]
    parts = state["bytes_per_tracked_object"]
    # The objects table is measured alike (on another copy) in both places; the inventory
    # and the tally add to it.
    assert parts["objects_table"] == pytest.approx(
        report["memory"]["bytes_per_tracked_object"], rel=0.02
    )
    assert parts["inventory_table"] > 0
    assert parts["posture_tally"] > 0
    assert state["inventory_entries"] > 0
    assert sum(parts.values()) * 400 == pytest.approx(state["total_bytes"], abs=400)


def test_rounds_split_the_events_into_consecutive_parts() -> None:
    seen: list[int] = []
    phase = benchmarking.measure(seen.append, list(range(12)), count_outputs=False)
    assert seen == list(range(12))
    assert phase.events == 12
    # 12 events in five rounds of two or three events.
    assert len(phase.rounds_events_per_cpu_second) == benchmarking.ROUNDS


def test_the_tick_runs_between_events_and_once_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The posture aggregation a worker runs every second: after every TICK_EVERY events, and
    # once after the last, so a phase's CPU includes all of it.
    monkeypatch.setattr(benchmarking, "TICK_EVERY", 4)
    seen: list[object] = []
    benchmarking.measure(
        seen.append, list(range(10)), count_outputs=False, tick=lambda: seen.append("tick")
    )
    assert seen == [0, 1, 2, 3, "tick", 4, 5, 6, 7, "tick", 8, 9, "tick"]
