"""From observations to figures: latencies by stage, the churn's summary, the state estimate.

Detection latency runs from the client-side time of a violating write to the ``opened``
finding on the findings topic (its Kafka timestamp), matched by cluster, object uid, one of
the violation's checks, and an object version at least the one the write produced. It splits
into two stages at the object's record on the resources topic: ``ingest`` (write -> resource
record) and ``evaluate`` (resource record -> finding). Remediation latency runs from that
finding to the remediator's audit events about the object: ``planned`` (the decision),
``applied`` (the fix is in the cluster: the headline figure) and ``verified``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from kposture.cli.benching import kubewriting, loading, observing, reporting, services, workload
from kposture.evaluate import benchmarking, synthetic
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.stream import processing
from kposture.schemas import audit

_REMEDIATION_STEPS = (
    ("planned", audit.Action.PLANNED, False),  # a decision, whatever its outcome
    ("applied", audit.Action.APPLIED, True),
    ("verified", audit.Action.VERIFIED, True),
)


def detection(observer: observing.Observer, samples: Sequence[loading.Sample]) -> dict[str, Any]:
    """The detection distribution (ms), its stages, and the raw values under ``_values``."""
    total: list[float] = []
    seen: list[float] = []
    apiserver: list[float] = []
    acknowledged: list[float] = []
    ingest: list[float] = []
    evaluate: list[float] = []
    for sample in samples:
        opened = _opened(observer, sample)
        if opened is None:
            continue
        total.append((opened.at - sample.at) * 1000)
        seen.append((opened.seen_at - sample.at) * 1000)
        if sample.acknowledged_at:
            # The write's own round trip (the apiserver storing it), and what follows it: the
            # watch event may leave before the answer does, so the latter can be negative.
            apiserver.append((sample.acknowledged_at - sample.at) * 1000)
            acknowledged.append((opened.at - sample.acknowledged_at) * 1000)
        key = f"{sample.cluster}/{sample.uid}"
        on_topic = observer.first_version(key, since_rv=sample.resource_version)
        if on_topic is not None:
            ingest.append((on_topic - sample.at) * 1000)
            evaluate.append((opened.at - on_topic) * 1000)
    return {
        **reporting.distribution(total),
        "samples": len(samples),
        "undetected": len(samples) - len(total),
        "stages": {
            "ingest": reporting.distribution(ingest),
            "evaluate": reporting.distribution(evaluate),
        },
        "apiserver_write": reporting.distribution(apiserver),
        "from_acknowledgement": reporting.distribution(acknowledged),
        "seen_by_consumer": reporting.distribution(seen),
        "_values": total,
    }


def remediation(observer: observing.Observer, samples: Sequence[loading.Sample]) -> dict[str, Any]:
    """The remediation distributions (ms) from the finding; ``applied`` is the headline."""
    steps: dict[str, list[float]] = {name: [] for name, _, _ in _REMEDIATION_STEPS}
    enforced = [s for s in samples if s.enforce]
    for sample in enforced:
        opened = _opened(observer, sample)
        if opened is None:
            continue
        for name, action, success in _REMEDIATION_STEPS:
            done = observer.first_audited(
                sample.cluster, sample.uid, action=action, since=opened.at, success=success
            )
            if done is not None:
                steps[name].append((done.at - opened.at) * 1000)
    return {
        **reporting.distribution(steps["applied"]),
        "until": "audit applied, from the opened finding",
        "samples": len(enforced),
        "unremediated": len(enforced) - len(steps["applied"]),
        "planned": reporting.distribution(steps["planned"]),
        "verified": reporting.distribution(steps["verified"]),
        "_values": {"applied": steps["applied"], "verified": steps["verified"]},
    }


def _opened(observer: observing.Observer, sample: loading.Sample) -> observing.Opened | None:
    return observer.first_opened(
        sample.cluster,
        sample.uid,
        checks=workload.CHECKS[sample.violation],
        since_rv=sample.resource_version,
    )


def churn(
    writers: Sequence[kubewriting.ClusterWriter],
    stats: Sequence[loading.ChurnStats],
    *,
    duration_s: float,
) -> dict[str, Any]:
    """Per cluster: writes by kind, the achieved rate, errors, drops and write round trips."""
    out: dict[str, Any] = {}
    for writer, st in zip(writers, stats, strict=True):
        seconds = sorted(st.write_seconds)
        total = sum(st.writes.values())
        out[writer.name] = {
            "writes": dict(st.writes),
            "achieved_writes_per_second": round(total / duration_s, 1),
            "errors": dict(st.errors),
            "error_examples": st.error_messages,
            "dropped": st.dropped,
            "write_ms_p50": round(statistics.median(seconds) * 1000, 1) if seconds else 0.0,
            "write_ms_max": round(seconds[-1] * 1000, 1) if seconds else 0.0,
        }
    return out


def table_estimate(tracked: int, *, seed: int) -> dict[str, Any]:
    """Evaluate's state for as many synthetic objects, measured in this process.

    The service's RSS growth is an upper bound (allocator slack, buffers and caches that
    warm up with the first events count too, and they dominate with a few thousand objects);
    this is the state alone, as ``kposture bench evaluate`` measures it: the objects table,
    and under ``state`` the inventory and posture tally besides.
    """
    policy = policy_store.PolicyStore(benchmarking.BASELINES).build()
    processor = processing.Processor(policy)
    table = benchmarking.Table()
    fleet = synthetic.fleet(max(tracked, 1), seed=seed)
    added = synthetic.added(fleet)
    for event in added:
        table.step(processor, event)
    return benchmarking.memory(table, added, meta=policy.meta)


@dataclasses.dataclass(frozen=True)
class Window:
    """The ``/proc`` samples and evaluate's committed offsets that bound the measurement."""

    idle: services.Sample  # evaluate, ready, before ingest starts
    idle_end: services.Sample
    start: dict[str, services.Sample]  # every service, once the cold load is committed
    end: dict[str, services.Sample]  # every service, once the churn is committed
    processed_start: int
    processed_end: int

    def idle_rate(self) -> float:
        """Evaluate's CPU seconds per second while it had nothing to do."""
        return (self.idle_end.cpu_seconds - self.idle.cpu_seconds) / max(
            self.idle_end.at - self.idle.at, 1e-9
        )

    def evaluate(self) -> dict[str, Any]:
        """Events, CPU seconds and their ratio over the window; idle CPU and the cold load."""
        events = self.processed_end - self.processed_start
        cpu = self.end["evaluate"].cpu_seconds - self.start["evaluate"].cpu_seconds
        seconds = self.end["evaluate"].at - self.start["evaluate"].at
        idle_rate = self.idle_rate()
        busy = cpu - idle_rate * seconds
        cold_cpu = self.start["evaluate"].cpu_seconds - self.idle_end.cpu_seconds
        return {
            "events": events,
            "cpu_seconds": round(cpu, 3),
            "events_per_cpu_second": ratio(events, cpu),
            "window_seconds": round(seconds, 1),
            "idle_cpu_percent": round(idle_rate * 100, 2),
            "events_per_cpu_second_less_idle": ratio(events, busy),
            "cold_load": {
                "events": self.processed_start,
                "cpu_seconds": round(cold_cpu, 3),
                "events_per_cpu_second": ratio(self.processed_start, cold_cpu),
            },
        }

    def memory(self, *, tracked: int) -> dict[str, Any]:
        """Evaluate's RSS, and its growth since idle per tracked object."""
        growth = self.end["evaluate"].rss_bytes - self.idle.rss_bytes
        per_object = growth / tracked if tracked else 0.0
        return {
            "evaluate_rss_bytes": self.end["evaluate"].rss_bytes,
            "evaluate_rss_idle_bytes": self.idle.rss_bytes,
            "rss_growth_bytes": growth,
            "tracked_objects": tracked,
            "bytes_per_tracked_object": round(per_object, 1),
            "mib_per_100k_objects": round(per_object * 100_000 / 2**20, 1),
        }

    def processes(self) -> dict[str, Any]:
        """Each service's CPU seconds in the window and its RSS at the end."""
        return {
            name: {
                "cpu_seconds_in_window": round(
                    self.end[name].cpu_seconds - self.start[name].cpu_seconds, 3
                ),
                "rss_bytes": self.end[name].rss_bytes,
            }
            for name in self.end
        }


def ratio(events: int, cpu_seconds: float) -> float:
    """Events per CPU-second, rounded; 0 when no CPU time was measured."""
    return round(events / cpu_seconds, 1) if cpu_seconds > 0 else 0.0
