"""One bench run, start to finish: environment, objects, services, cold list, churn, drain.

The phases, and what each one measures:

1. the local environment with N clusters; M objects per cluster, plus an ``enforce`` namespace
   with compliant Deployments for the remediator to fix later;
2. evaluate and remediate start (separate processes) and become ready; evaluate's RSS now is
   the baseline of the memory figures;
3. ingest starts and lists every cluster cold: objects per second onto the resources topic;
   evaluate works through them (its cold load), and the measured window opens once it has
   committed all of them;
4. steady churn for the given duration at the given rate (see ``workload`` for the mix); the
   violating writes are the detection samples, the broken ``enforce`` Deployments the
   remediation samples;
5. the drain: until every sample is detected and fixed (or a bound passes) and evaluate has
   caught up; the window closes. Evaluate's events are the difference of its committed
   offsets, its CPU the difference of its ``/proc`` times, across the window;
6. the burst (``bursting``): a synthetic fleet and its updates published straight to the
   resources topic, so that evaluate's CPU per event is measured while it has work queued;
   this is the report's ``evaluate`` (the churn window's figures are ``evaluate_churn_window``).

Everything the run created -- processes, namespaces, cluster-scoped objects, topics -- is
removed at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kposture.cli.benching import (
    bursting,
    churning,
    kubewriting,
    loading,
    measuring,
    observing,
    reporting,
    services,
    workload,
)
from kposture.cli.devenv import environment
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod

Say = Callable[[str], None]
_READY_TIMEOUT_S = 120.0
_COLD_LIST_TIMEOUT_S = 180.0
_CATCH_UP_TIMEOUT_S = 180.0
_POLL_S = 0.2
_IDLE_S = 3.0  # evaluate's idle spell before ingest starts


class BenchError(RuntimeError):
    """The bench could not run to the end; the message says which phase and why."""

    retriable = False


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``kposture bench`` was asked to do. Rates are per cluster."""

    clusters: int = 2
    objects: int = 200  # created per cluster, before ingest starts
    duration_s: float = 60.0  # of steady churn
    rate: float = 20.0  # churn writes per second per cluster
    remediations: int = 5  # Deployments broken in the enforce namespace, per cluster
    concurrency: int = 16  # churn writes in flight per cluster
    drain_s: float = 45.0  # at most, after the churn, for the last findings and fixes
    burst_events: int = 20_000  # synthetic updates published after the churn (0: no burst)
    seed: int = 0
    keep_logs: bool = False  # keep the services' logs and config (else removed on success)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The report (JSON-ready) and the raw latencies behind it, in ms, for the plot."""

    report: dict[str, Any]
    series: dict[str, list[float]]


def run(options: Options, *, say: Say) -> Outcome:
    """Run the bench on the local environment (see the module docstring)."""
    say(f"starting the local environment ({options.clusters} clusters)...")
    env = environment.up(clusters_count=options.clusters)
    bench = _Run(env, options, say=say)
    report = asyncio.run(bench.main())
    return Outcome(report=report, series=bench.series)


def bench_settings(
    env: environment.Environment, *, prefix: str, run_dir: Path, ports: dict[str, int]
) -> settings_mod.Settings:
    """The settings of one run: fresh topics, consumer groups and state; free HTTP ports."""

    def http(service: str) -> settings_mod.HttpSettings:
        return settings_mod.HttpSettings(host="127.0.0.1", port=ports[service])

    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=env.kafka_bootstrap, topic_prefix=prefix
        ),
        clusters=[
            settings_mod.ClusterSettings(name=c, kubeconfig=str(env.kubeconfig), context=c)
            for c in env.contexts
        ],
        ingest=settings_mod.IngestSettings(http=http("ingest")),
        evaluate=settings_mod.EvaluateSettings(
            app_id=f"{prefix}-evaluate", data_dir=str(run_dir / "evaluate"), http=http("evaluate")
        ),
        remediate=settings_mod.RemediateSettings(
            default_mode="observe",
            # The bench breaks its enforce Deployments on purpose, several per cluster; the
            # breaker's touch limit guards against a runaway remediator, which is not what is
            # measured here. Throttle, backoff and canaries keep their production defaults.
            breaker_touch_percent=100.0,
            canary_soak_s=2.0,
            canary_timeout_s=60.0,
            group_id=f"{prefix}-remediate",
            http=http("remediate"),
        ),
        telemetry=settings_mod.TelemetrySettings(log_level="INFO", log_format="json"),
    )


class _Run:
    """The state of one run; ``main`` is the whole of it."""

    def __init__(self, env: environment.Environment, options: Options, *, say: Say) -> None:
        self.options = options
        self.say = say
        self.run_id = uuid.uuid4().hex[:6]
        self.prefix = f"bench-{self.run_id}"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"kposture-bench-{self.run_id}-"))
        ports = {name: services.free_port() for name in ("ingest", "evaluate", "remediate")}
        self.settings = bench_settings(env, prefix=self.prefix, run_dir=self.run_dir, ports=ports)
        config = self.run_dir / "kposture.yaml"
        config.write_text(settings_mod.dump(self.settings))
        self.services = {
            name: services.Service(
                name, config_path=config, log_path=self.run_dir / f"{name}.log", http_port=port
            )
            for name, port in ports.items()
        }
        self.observer = observing.Observer(
            self.settings.kafka,
            evaluate_group=self.settings.evaluate.app_id,
            remediate_group=self.settings.remediate.group_id,
        )
        self.writers: list[kubewriting.ClusterWriter] = []
        self.fleets: list[list[workload.Manifest]] = []
        self.uids: list[dict[tuple[str, str, str], str]] = []
        self.series: dict[str, list[float]] = {}
        self.ok = False

    async def main(self) -> dict[str, Any]:
        try:
            report = await self._measure()
            self.ok = True
        finally:
            problems = await self._tear_down()
        report["cleanup"] = {"ok": not problems, "problems": problems}
        report["memory"]["table_estimate"] = measuring.table_estimate(
            report["memory"]["tracked_objects"], seed=self.options.seed
        )
        return report

    async def _measure(self) -> dict[str, Any]:
        opts = self.options
        await kafka.create_topics(self.settings.kafka)
        await self._create_objects()
        self.say("starting evaluate and remediate...")
        evaluate, remediate, ingest = (
            self.services[n] for n in ("evaluate", "remediate", "ingest")
        )
        await evaluate.start()
        await remediate.start()
        await asyncio.gather(
            evaluate.wait_ready(timeout_s=_READY_TIMEOUT_S),
            remediate.wait_ready(timeout_s=_READY_TIMEOUT_S),
        )
        await self.observer.start()
        # A short idle spell: what evaluate costs with nothing to do (timers, polls), so that
        # the reader can tell fixed costs from per-event ones in the window's CPU time.
        idle = evaluate.sample()
        await asyncio.sleep(_IDLE_S)
        idle_end = evaluate.sample()
        self.say("starting ingest: cold list...")
        await ingest.start()
        cold = await self._cold_list(ingest)
        caught_up = await self.observer.wait_caught_up(timeout_s=_CATCH_UP_TIMEOUT_S)
        # The remediator decides on every finding of the cold load first (most are skipped in
        # observe mode); the churn starts once it has, so that the remediation latency is
        # that of the steady state, not of the queue a cold start leaves behind.
        backlog = await self.observer.lag("remediate")
        self.say(f"waiting for remediate to decide on the cold load's {backlog} findings...")
        waited = time.monotonic()
        remediate_caught_up = await self.observer.wait_caught_up(
            "remediate", timeout_s=_CATCH_UP_TIMEOUT_S
        )
        remediate_cold = {
            "backlog_findings": backlog,
            "caught_up": remediate_caught_up,
            "drain_seconds": round(time.monotonic() - waited, 1),
        }
        processed0 = await self.observer.processed()
        remediate_start = await self.observer.processed("remediate")
        start = {name: s.sample() for name, s in self.services.items()}
        self.say(
            f"cold list: {cold['objects_listed']} objects at {cold['objects_per_second']}/s; "
            f"churn for {opts.duration_s:.0f}s at {opts.rate:g} writes/s per cluster..."
        )
        stats = await self._churn()
        samples = [s for st in stats for s in st.samples]
        self.say(f"draining ({len(samples)} violating writes to match)...")
        deadline = time.monotonic() + opts.drain_s
        # The evaluate window closes once every violation is detected and evaluate has
        # committed everything; waiting for the remediations would only add idle time.
        detected = await self._wait(deadline, lambda: self._detected(samples))
        caught_up = caught_up and await self.observer.wait_caught_up(
            timeout_s=max(5.0, deadline - time.monotonic())
        )
        processed1 = await self.observer.processed()
        end = {name: s.sample() for name, s in self.services.items()}
        remediate_lag = await self.observer.lag("remediate")
        fixed = await self._wait(deadline, lambda: self._fixed(samples))
        detection = measuring.detection(self.observer, samples)
        remediation = measuring.remediation(self.observer, samples)
        self.series = {"detection": detection.pop("_values"), **remediation.pop("_values")}
        window = measuring.Window(idle, idle_end, start, end, processed0, processed1)
        churn_window = {**window.evaluate(), "caught_up": caught_up}
        memory = window.memory(tracked=len(self.observer.live))  # before the burst adds more
        burst = None
        if opts.burst_events:
            self.say(f"burst: {opts.burst_events} synthetic updates straight to evaluate...")
            burst = await bursting.burst(
                self.settings,
                evaluate=evaluate,
                observer=self.observer,
                objects=max(1, opts.burst_events // 4),
                events=opts.burst_events,
                idle_cpu_per_second=window.idle_rate(),
                seed=opts.seed,
            )
        report: dict[str, Any] = {
            # Evaluate's cost per event is that of the burst, where it has work queued; in the
            # churn window it idles most of the time (both are reported).
            "evaluate": burst or churn_window,
            "evaluate_churn_window": churn_window,
            "detection_latency_ms": detection,
            "remediation_latency_ms": remediation,
            "ingest": cold,
            "memory": memory if burst is None else {**memory, **bursting.memory(burst, memory)},
            "processes": {
                **window.processes(),
                # The bench's own client side (writes, topic reads), on the same CPUs.
                "bench": {"cpu_seconds_total": round(time.process_time(), 3)},
            },
            "remediate": {
                "cold_load": remediate_cold,
                "lag_after_churn_findings": remediate_lag,
                "findings_decided_since_churn_start": await self.observer.processed("remediate")
                - remediate_start,
            },
            "churn": measuring.churn(self.writers, stats, duration_s=opts.duration_s),
            "run": {
                "run_id": self.run_id,
                "topic_prefix": self.prefix,
                "clusters": [w.name for w in self.writers],
                "objects_per_cluster": opts.objects,
                "remediations_per_cluster": opts.remediations,
                "duration_s": opts.duration_s,
                "rate_per_cluster": opts.rate,
                "all_detected": detected,
                "all_fixed": fixed,
                "findings_opened": self.observer.findings_opened,
                "resource_records": self.observer.resource_records,
                "baselines": list(self.settings.evaluate.baselines),
                "cpus": len(os.sched_getaffinity(0)),
            },
        }
        report["targets"] = reporting.verdicts(report)
        return report

    async def _create_objects(self) -> None:
        opts = self.options
        self.say(f"run {self.run_id}: creating {opts.objects} objects per cluster...")
        for cluster in self.settings.clusters:
            self.writers.append(await kubewriting.ClusterWriter.connect(cluster))
        enforce = workload.enforce_namespace(opts.remediations, run_id=self.run_id)
        self.fleets = [
            workload.fleet(opts.objects, run_id=self.run_id, seed=opts.seed + i)
            for i in range(len(self.writers))
        ]
        self.uids = list(
            await asyncio.gather(
                *(
                    loading.create_all(w, workload.creation_order([*fleet, *enforce]))
                    for w, fleet in zip(self.writers, self.fleets, strict=True)
                )
            )
        )
        self.observer.follow = {
            f"{writer.name}/{uid}"
            for writer, uids in zip(self.writers, self.uids, strict=True)
            for (kind, _, _), uid in uids.items()
            if kind == "Deployment"
        }

    def _detected(self, samples: list[loading.Sample]) -> bool:
        return bool(measuring.detection(self.observer, samples)["count"] == len(samples))

    def _fixed(self, samples: list[loading.Sample]) -> bool:
        verified = measuring.remediation(self.observer, samples)["verified"]["count"]
        return bool(verified == sum(s.enforce for s in samples))

    async def _wait(self, deadline: float, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` or the deadline; whether it was done."""
        while not done():
            if time.monotonic() >= deadline:
                return False
            self._check()
            await asyncio.sleep(0.5)
        return True

    async def _cold_list(self, ingest: services.Service) -> dict[str, Any]:
        """Wait until every created object is on the resources topic; the ingest figures."""
        ours = {
            f"{w.name}/{uid}"
            for w, uids in zip(self.writers, self.uids, strict=True)
            for uid in uids.values()
        }
        seen = self.observer.first_seen
        deadline = time.monotonic() + _COLD_LIST_TIMEOUT_S
        while not ours <= seen.keys():
            if time.monotonic() > deadline:
                missing = len(ours - seen.keys())
                raise BenchError(f"cold list: {missing} of {len(ours)} objects never arrived")
            self._check()
            await asyncio.sleep(_POLL_S)
        first = min(seen.values())
        last = max(seen[key] for key in ours)
        listed = sum(1 for at in seen.values() if at <= last)
        started = ingest.started_at or first
        return {
            "objects_per_second": round(listed / (last - first), 1) if last > first else 0.0,
            "objects_listed": listed,
            "created_objects": len(ours),
            "cold_list_seconds": round(last - first, 3),
            "startup_seconds": round(first - started, 3),
            "objects_per_second_including_startup": round(listed / (last - started), 1),
        }

    async def _churn(self) -> list[loading.ChurnStats]:
        opts = self.options
        namespace = workload.namespace_name(self.run_id, "enforce")
        enforce = [f"fixme-{i}" for i in range(opts.remediations)]
        return list(
            await asyncio.gather(
                *(
                    loading.churn(
                        writer,
                        churning.Churn(fleet, seed=opts.seed + 100 + i),
                        uids=uids,
                        enforce=enforce,
                        enforce_namespace=namespace,
                        rate=opts.rate,
                        duration_s=opts.duration_s,
                        concurrency=opts.concurrency,
                    )
                    for i, (writer, fleet, uids) in enumerate(
                        zip(self.writers, self.fleets, self.uids, strict=True)
                    )
                )
            )
        )

    def _check(self) -> None:
        self.observer.check()
        for service in self.services.values():
            service.check()

    async def _tear_down(self) -> list[str]:
        """Stop the services, delete the run's objects and topics; what went wrong, if anything."""
        problems: list[str] = []
        for name, service in self.services.items():
            try:
                await service.stop()
            except OSError as exc:
                problems.append(f"stopping {name}: {exc}")
        with contextlib.suppress(Exception):
            await self.observer.stop()
        for writer in self.writers:
            problems += await loading.clean_up(writer, run_id=self.run_id)
            await writer.close()
        try:
            # Evaluate's changelog topics start with its app id, which starts with the prefix.
            prefix = self.settings.kafka.topic_prefix
            await kafka.delete_topics(self.settings.kafka, lambda t: t.startswith(prefix))
        except Exception as exc:  # noqa: BLE001 - cleanup reports every failure, raises none
            problems.append(f"deleting topics: {exc}")
        if self.ok and not self.options.keep_logs:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        else:
            self.say(f"the services' logs are kept in {self.run_dir}")
        return problems
