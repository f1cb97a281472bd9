"""``kposture bench`` end to end: a small run on the real environment, its JSON and its plot.

The bench runs as users run it (the console script, in a scratch directory) against the local
environment that ``local_env`` starts, with the three services as separate processes. Nothing
is mocked; the assertions read the report it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kposture.cli.devenv import environment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BENCH_TIMEOUT_S = 540
BURST_EVENTS = 2000
REQUIRED = {
    "evaluate": {"events", "cpu_seconds", "events_per_cpu_second"},
    "detection_latency_ms": {"p50", "p99", "max"},
    "remediation_latency_ms": {"p50", "p99"},
    "ingest": {"objects_per_second"},
    "memory": {"evaluate_rss_bytes", "bytes_per_tracked_object"},
}


def _kposture(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``kposture ARGS...`` as users run it: the console script, in ``cwd``."""
    script = Path(sys.executable).with_name("kposture")
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def bench_run(
    local_env: environment.Environment, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    """One small bench run (about two minutes), shared by the tests of this module."""
    workdir = tmp_path_factory.mktemp("bench")
    output = workdir / "bench-report.json"
    completed = _kposture(
        "bench",
        "--objects",
        "20",
        "--duration",
        "15",
        "--burst-events",
        str(BURST_EVENTS),
        "--output",
        str(output),
        cwd=workdir,
    )
    assert output.is_file(), f"no report; output:\n{completed.stdout}\n{completed.stderr}"
    return completed, json.loads(output.read_text()), output


def test_bench_exits_zero_with_the_report_shape_of_the_issue(
    bench_run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    """The report has every section and key the issue names, with numbers in them."""
    completed, report, _ = bench_run
    assert completed.returncode == 0, completed.stderr[-4000:]
    for section, keys in REQUIRED.items():
        assert keys <= set(report[section]), (section, report[section])
        for key in keys:
            assert isinstance(report[section][key], int | float), (section, key)


def test_detection_latency_was_measured_on_violating_writes(
    bench_run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    """Violating writes were made and matched to opened findings, with positive latencies."""
    _, report, _ = bench_run
    detection = report["detection_latency_ms"]
    assert detection["count"] > 0
    assert detection["samples"] >= detection["count"]
    assert 0 < detection["p50"] <= detection["p99"] <= detection["max"]
    # Split at the apiserver's answer: the write's round trip, then the rest of the way.
    write, after = detection["apiserver_write"], detection["from_acknowledgement"]
    assert write["count"] == after["count"] == detection["count"]
    assert 0 < write["p50"] <= write["max"]
    assert after["max"] <= detection["max"]


def test_the_pipeline_did_real_work_and_cleaned_up(
    bench_run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    """Evaluate processed events on CPU time, ingest listed objects, and nothing was left."""
    _, report, _ = bench_run
    assert report["evaluate"]["events"] > 0
    assert report["evaluate"]["cpu_seconds"] > 0
    assert report["ingest"]["objects_per_second"] > 0
    assert report["memory"]["evaluate_rss_bytes"] > 0
    assert report["cleanup"] == {"ok": True, "problems": []}


def test_evaluate_cost_per_event_comes_from_the_burst_and_the_churn_window_is_kept(
    bench_run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    """The burst's updates (and its cold load before them) all reached evaluate's commits."""
    _, report, _ = bench_run
    burst = report["evaluate"]
    # Ingest may publish a resync or two meanwhile; nothing of the burst may be missing.
    assert burst["events"] >= BURST_EVENTS
    assert burst["cold_load"]["events"] >= BURST_EVENTS // 4
    assert sum(burst["mix"].values()) == BURST_EVENTS
    assert burst["caught_up"] is True
    assert burst["events_per_cpu_second"] == pytest.approx(
        burst["events"] / burst["cpu_seconds"], rel=0.01
    )
    churn = report["evaluate_churn_window"]
    assert churn["events"] > 0
    assert churn["cpu_seconds"] > 0


def test_a_png_of_the_latency_distributions_is_written_next_to_the_report(
    bench_run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    """The plot is a non-trivial PNG beside the JSON."""
    _, _, output = bench_run
    picture = output.with_suffix(".png")
    assert picture.is_file()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000


def test_bench_evaluate_with_kafka_reports_each_phase_of_the_worker(
    local_env: environment.Environment, tmp_path: Path
) -> None:
    output = tmp_path / "evaluate.json"
    completed = _kposture(
        "bench",
        "evaluate",
        "--objects",
        "2000",
        "--events",
        "2000",
        "--kafka",
        "--output",
        str(output),
        cwd=tmp_path,
        env={"KPOSTURE_KAFKA_BOOTSTRAP": local_env.kafka_bootstrap},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    measured = json.loads(output.read_text())["kafka"]
    names = ("evaluate", "evaluate_unchanged_only", "evaluate_changed_only")
    cold, updates = measured["cold_load"], [measured[name] for name in names]
    # The phases split exactly at each stream's 2,000 events: every record counts in one.
    assert cold["events"] == 2000
    assert [phase["events"] for phase in updates] == [2000, 2000, 2000]
    for phase in (cold, *updates):
        assert phase["cpu_seconds"] > 0
        assert phase["events_per_cpu_second"] == pytest.approx(
            phase["events"] / phase["cpu_seconds"], rel=0.01
        )
        # The breakdown of the CPU per event adds up to the whole, and each part is measured.
        parts = phase["cpu_us_per_event"]
        assert parts["total"] == pytest.approx(
            phase["cpu_seconds"] / phase["events"] * 1e6, rel=0.01
        )
        split = ("handling_records", "rest_of_event_loop", "other_threads")
        assert sum(parts[name] for name in split) == pytest.approx(parts["total"], abs=0.5)
        # The worker runs no thread of its own now; the event loop's two parts are measured.
        assert parts["handling_records"] > 0
        assert parts["rest_of_event_loop"] > 0
        assert parts["other_threads"] >= 0
    assert measured["memory"]["evaluate_rss_bytes"] > 0
    report = json.loads(output.read_text())
    for name, ratio in report["kafka_to_in_process"].items():
        expected = measured[name]["events_per_cpu_second"] / report[name]["events_per_cpu_second"]
        assert ratio == pytest.approx(expected, abs=0.001)
    assert set(report["kafka_to_in_process"]) == {"cold_load", *names}
