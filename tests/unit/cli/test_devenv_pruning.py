"""Which topics ``kposture dev up`` considers left over, and the idle start-up timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kposture.cli.devenv import processes, pruning

NOW = 1_800_000_000.0


def _partition(data_dir: Path, topic: str, partition: int, *, written: float) -> None:
    directory = data_dir / f"{topic}-{partition}"
    directory.mkdir(parents=True)
    segment = directory / "00000000000000000000.log"
    segment.write_bytes(b"")
    os.utime(segment, (written, written))


def test_only_generated_names_idle_for_the_whole_period_are_stale(tmp_path: Path) -> None:
    old, recent = NOW - 7200, NOW - 60
    _partition(tmp_path, "t0123456789.findings.v1", 0, written=old)
    _partition(tmp_path, "t0123456789.findings.v1", 1, written=old)
    _partition(tmp_path, "t0123456789-evaluate-objects-changelog", 0, written=old)
    _partition(tmp_path, "it-0123456789.resources.v1", 0, written=old)
    _partition(tmp_path, "bench-3c9e7af3.posture.v1", 0, written=old)
    _partition(tmp_path, "demo20261127011638.audit.v1", 0, written=old)
    # One partition written a minute ago keeps the whole topic.
    _partition(tmp_path, "tfedcba9876.resources.v1", 0, written=old)
    _partition(tmp_path, "tfedcba9876.resources.v1", 1, written=recent)
    # Names our runs never generate, however old.
    _partition(tmp_path, "kposture.resources.v1", 0, written=old)
    _partition(tmp_path, "__consumer_offsets", 0, written=old)
    _partition(tmp_path, "team-x.resources.v1", 0, written=old)
    _partition(tmp_path, "tests.resources.v1", 0, written=old)
    _partition(tmp_path, "t0123.resources.v1", 0, written=old)
    (tmp_path / "meta.properties").write_text("")

    stale = pruning.stale_topics(tmp_path, idle_s=3600, now=NOW)

    assert stale == [
        "bench-3c9e7af3.posture.v1",
        "demo20261127011638.audit.v1",
        "it-0123456789.resources.v1",
        "t0123456789-evaluate-objects-changelog",
        "t0123456789.findings.v1",
    ]


def test_a_missing_data_dir_has_nothing_stale(tmp_path: Path) -> None:
    assert pruning.stale_topics(tmp_path / "absent", idle_s=0) == []


def test_wait_until_extends_its_deadline_while_progress_is_made() -> None:
    ticks = iter(range(1000))
    calls = {"n": 0}

    def ready() -> bool:
        calls["n"] += 1
        return calls["n"] > 8  # ready after ~8 polls, long past the 0.05 s idle timeout

    started = time.monotonic()
    processes.wait_until(
        ready,
        timeout_s=0.05,
        what="something",
        interval_s=0.02,
        progress=lambda: next(ticks),
        max_timeout_s=5.0,
    )
    assert time.monotonic() - started < 5.0


def test_wait_until_without_progress_times_out_after_the_idle_timeout() -> None:
    with pytest.raises(processes.DevEnvError, match="timed out after"):
        processes.wait_until(
            lambda: False,
            timeout_s=0.1,
            what="something",
            interval_s=0.02,
            progress=lambda: 0,
            max_timeout_s=5.0,
        )


def test_wait_until_stops_at_the_hard_cap_even_with_progress() -> None:
    ticks = iter(range(100_000))
    started = time.monotonic()
    with pytest.raises(processes.DevEnvError):
        processes.wait_until(
            lambda: False,
            timeout_s=0.05,
            what="something",
            interval_s=0.01,
            progress=lambda: next(ticks),
            max_timeout_s=0.3,
        )
    assert time.monotonic() - started < 2.0
