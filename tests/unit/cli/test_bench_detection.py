"""The bench's detection latency: from the write, and split at the apiserver's answer."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kposture.cli.benching import loading, measuring, observing, workload


class _Observer:
    """What ``measuring.detection`` asks of the observer: openings and topic arrivals."""

    def __init__(self, opened: dict[str, observing.Opened], on_topic: dict[str, float]) -> None:
        self._opened, self._on_topic = opened, on_topic

    def first_opened(self, cluster: str, uid: str, **_: Any) -> observing.Opened | None:
        return self._opened.get(uid)

    def first_version(self, key: str, **_: Any) -> float | None:
        return self._on_topic.get(key)


def _sample(uid: str, *, at: float, acknowledged_at: float) -> loading.Sample:
    return loading.Sample(
        cluster="c1",
        uid=uid,
        violation=next(iter(workload.Violation)),
        resource_version=7,
        at=at,
        enforce=False,
        acknowledged_at=acknowledged_at,
    )


def test_detection_is_split_at_the_write_acknowledgement() -> None:
    opened = observing.Opened(check="privileged", resource_version=7, at=100.4, seen_at=100.45)
    observer = _Observer({"a": opened}, {"c1/a": 100.35})
    samples = [
        _sample("a", at=100.0, acknowledged_at=100.3),
        _sample("never-detected", at=100.0, acknowledged_at=100.1),
    ]
    report = measuring.detection(cast("observing.Observer", observer), samples)
    assert report["samples"] == 2
    assert report["undetected"] == 1
    assert report["p50"] == pytest.approx(400.0)
    assert report["apiserver_write"]["p50"] == pytest.approx(300.0)
    assert report["from_acknowledgement"]["p50"] == pytest.approx(100.0)
    assert report["stages"]["ingest"]["p50"] == pytest.approx(350.0)
    assert report["stages"]["evaluate"]["p50"] == pytest.approx(50.0)
    assert report["seen_by_consumer"]["p50"] == pytest.approx(450.0)
