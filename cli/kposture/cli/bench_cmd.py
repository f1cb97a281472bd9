"""``kposture bench``: the whole pipeline under load; ``bench evaluate``: evaluate alone.

``kposture bench`` (no sub-command) runs the three services on the local environment under
synthetic multi-cluster churn and reports detection and remediation latency, evaluate's events
per CPU-second, ingest's cold-list rate and evaluate's memory per tracked object; the parts
live in ``kposture.cli.benching``.

``kposture bench evaluate`` measures evaluate's throughput, per-object latency and state per
object. Without ``--kafka`` it measures the engine and the stream processor in process, on a
synthetic fleet (``kposture.evaluate.benchmarking``). With ``--kafka`` it also runs an evaluate
worker end to end against the broker of the configuration (by default the local one of ``kposture
dev up``): the events are produced first, on fresh topics, then one worker consumes them; its
CPU time is measured from the first event it handles, so start-up and production are left
out, and split in phases: the cold load (every object added), then three streams of updates
(the default mix, events that change nothing the checks read, events that all do).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pathlib
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import orjson
import typer

from kposture.cli import ingest_cmd, serving, topics_cmd
from kposture.cli.benching import bursting, measuring, reporting, running, services
from kposture.cli.devenv import processes
from kposture.evaluate import app as evaluate_app
from kposture.evaluate import benchmarking, synthetic
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import topics

bench_app = typer.Typer(
    help="Benchmarks. Without a sub-command: the whole pipeline under multi-cluster load.",
    invoke_without_command=True,
)

_POLL_S = 0.01  # how often the end-to-end run checks the worker's progress
_STALL_S = 120.0  # how long the worker may handle nothing before the run fails, saying so


_OBJECTS = typer.Option(10_000, "--objects", min=1, help="Tracked objects.")
_EVENTS = typer.Option(20_000, "--events", min=1, help="Update events per phase.")
_OUTPUT = typer.Option(None, "--output", "-o", help="Also write the JSON to this file.")
_KAFKA = typer.Option(
    False, "--kafka", help="Also run an evaluate worker end to end through Kafka."
)
_SEED = typer.Option(0, "--seed", help="Seed of the synthetic fleet.")


_CLUSTERS = typer.Option(2, "--clusters", min=1, help="Clusters of the local environment.")
_PIPELINE_OBJECTS = typer.Option(200, "--objects", min=1, help="Objects created per cluster.")
_DURATION = typer.Option(60.0, "--duration", min=1.0, help="Seconds of steady churn.")
_RATE = typer.Option(20.0, "--rate", min=0.1, help="Churn writes per second per cluster.")
_REMEDIATIONS = typer.Option(
    5, "--remediations", min=0, help="Deployments broken in an enforce namespace, per cluster."
)
_KEEP_LOGS = typer.Option(False, "--keep-logs", help="Keep the services' logs and config.")
_BURST = typer.Option(
    20_000,
    "--burst-events",
    min=0,
    help="Synthetic updates published straight to evaluate after the churn (0: none).",
)
_REPORT = typer.Option(
    Path("bench-report.json"), "--output", "-o", help="The JSON report; the PNG goes next to it."
)


@bench_app.callback()
def pipeline(
    ctx: typer.Context,
    *,
    clusters: int = _CLUSTERS,
    objects: int = _PIPELINE_OBJECTS,
    duration: float = _DURATION,
    rate: float = _RATE,
    remediations: int = _REMEDIATIONS,
    output: Path = _REPORT,
    seed: int = _SEED,
    keep_logs: bool = _KEEP_LOGS,
    burst_events: int = _BURST,
) -> None:
    """Run ingest, evaluate and remediate on the local environment under synthetic load.

    Writes the JSON report to --output and a PNG of the latency distributions next to it.
    """
    if ctx.invoked_subcommand is not None:
        return  # ``bench evaluate`` or ``bench ingest``: the options above do not apply
    options = running.Options(
        clusters=clusters,
        objects=objects,
        duration_s=duration,
        rate=rate,
        remediations=remediations,
        seed=seed,
        keep_logs=keep_logs,
        burst_events=burst_events,
    )
    try:
        outcome = running.run(options, say=lambda line: typer.echo(line, err=True))
    except (running.BenchError, services.ServiceError, processes.DevEnvError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    report = outcome.report
    reporting.write(report, output)
    picture = reporting.plot_path(output)
    reporting.plot(
        picture,
        detection_ms=outcome.series["detection"],
        remediation_ms={k: v for k, v in outcome.series.items() if k != "detection"},
        title=(
            f"kposture bench: {clusters} clusters, {objects} objects each, "
            f"{duration:g}s churn at {rate:g} writes/s per cluster"
        ),
    )
    summary = {k: report[k] for k in ("evaluate", "detection_latency_ms", "remediation_latency_ms")}
    summary |= {k: report[k] for k in ("ingest", "memory", "targets")}
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    typer.echo(f"report written to {output}, plot to {picture}", err=True)


@bench_app.command("evaluate")
def evaluate(
    *,
    objects: int = _OBJECTS,
    events: int = _EVENTS,
    output: Path | None = _OUTPUT,
    use_kafka: bool = _KAFKA,
    config: Path | None = topics_cmd.ConfigOption,
    seed: int = _SEED,
) -> None:
    """Measure evaluate on a synthetic fleet and print the results as JSON."""
    report = benchmarking.run(objects=objects, events=events, seed=seed)
    if use_kafka:
        settings = topics_cmd.load_settings(config)
        serving.tune_gc()  # the worker below runs as ``kposture evaluate`` would
        report["kafka"] = asyncio.run(
            run_kafka(settings, objects=objects, events=events, seed=seed)
        )
        report["kafka_to_in_process"] = kafka_ratios(report)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    typer.echo(text)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")


def kafka_ratios(report: dict[str, Any]) -> dict[str, float]:
    """Each phase's events per CPU-second through Kafka over the same run's in-process figure.

    Machines differ run to run; within one run the ratio is what noise cannot move.
    """
    ratios = {}
    for phase in ("cold_load", *_KAFKA_MIXES):
        through, alone = report["kafka"][phase], report[phase]
        ratios[phase] = round(through["events_per_cpu_second"] / alone["events_per_cpu_second"], 3)
    return ratios


async def run_kafka(
    settings: settings_mod.Settings, *, objects: int, events: int, seed: int = 0
) -> dict[str, Any]:
    """One evaluate worker end to end: ``objects`` added events, then the update phases."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="kposture-bench-") as data_dir:
        bench = msgspec.structs.replace(
            settings,
            kafka=msgspec.structs.replace(settings.kafka, topic_prefix=prefix),
            evaluate=msgspec.structs.replace(
                settings.evaluate,
                baselines=list(benchmarking.BASELINES),
                app_id=f"{prefix}-evaluate",
                data_dir=str(pathlib.Path(data_dir) / "evaluate"),
                http=settings_mod.HttpSettings(port=0),
            ),
        )
        fleet = synthetic.fleet(objects, seed=seed)
        added = synthetic.added(fleet)
        # In order, as the fleet follows the edits: the default mix, then a stream whose
        # events change nothing the checks read, then one where every event does.
        phases = [
            [e for _, e in synthetic.updates(fleet, events, seed=seed + 2 + n, mix=mix)]
            for n, mix in enumerate(_KAFKA_MIXES.values())
        ]
        specs = topics.catalogue(prefix=prefix, partitions=bench.kafka.partitions)
        await kafka.create_topics(bench.kafka, [_Uncompacted.of(spec) for spec in specs])
        await bursting.produce(bench, added + [e for phase in phases for e in phase])
        ends = list(itertools.accumulate([len(added), *map(len, phases)]))
        return await _consume(bench, ends=ends, tracked=len(fleet.objects))


class _Uncompacted(topics.TopicSpec, frozen=True):
    """A topic of the catalogue whose records compaction leaves alone for a day.

    The whole backlog is produced before the worker starts, several events per object: the
    broker's compaction would remove the superseded ones meanwhile (a run lost 10,000 of
    65,000), and the phases, which end at counts of handled events, would never end.
    """

    @classmethod
    def of(cls, spec: topics.TopicSpec) -> _Uncompacted:
        """``spec`` with the bench's compaction lag."""
        return cls(**msgspec.structs.asdict(spec))

    def configs(self) -> dict[str, str]:
        """The catalogue's configs, compacted topics keeping each record a day first."""
        configs = super().configs()
        if "compact" in self.cleanup_policy:
            configs["min.compaction.lag.ms"] = str(_COMPACTION_LAG_MS)
        return configs


_COMPACTION_LAG_MS = 24 * 3600 * 1000

_KAFKA_MIXES = {
    "evaluate": synthetic.UPDATE_MIX,
    "evaluate_unchanged_only": benchmarking.UNCHANGED_MIX,
    "evaluate_changed_only": (("changed", 1.0),),
}
"""The update phases of ``run_kafka``, by report key, and their mix of kinds of update."""


async def _consume(
    settings: settings_mod.Settings, *, ends: list[int], tracked: int
) -> dict[str, Any]:
    # Phases split by the worker's count of handled records, each ending at one of ``ends``:
    # the cold load (every object ``added``: a cold start that opens every finding), then
    # the update phases of ``_KAFKA_MIXES``. The worker's record handler is wrapped to note
    # the CPU time the moment a phase ends, and to add up the CPU that handling records
    # takes (it runs on the event loop's thread).
    worker = evaluate_app.EvaluateApp(settings)
    marks: list[_Mark] = []
    total = ends[-1]
    handle = worker._on_resource  # a measuring hook, for the bench only
    handling = [0.0]

    def mark() -> None:
        marks.append(
            _Mark(
                worker.processed,
                time.process_time(),
                time.monotonic(),
                time.thread_time(),
                handling[0],
            )
        )

    def measured_handle(message: Any) -> None:
        if not marks:
            mark()
        started = time.thread_time()
        handle(message)
        handling[0] += time.thread_time() - started
        if len(marks) <= len(ends) and worker.processed == ends[len(marks) - 1]:
            mark()

    worker._on_resource = measured_handle  # type: ignore[method-assign]
    rss_before = _rss_bytes()
    try:
        await asyncio.wait_for(worker.start(), timeout=_STALL_S)
    except TimeoutError as exc:
        raise RuntimeError(f"the evaluate worker did not start within {_STALL_S:.0f} s") from exc
    try:
        seen, since = worker.processed, time.monotonic()
        while worker.processed < total:  # the app signals no progress events: poll
            await asyncio.sleep(_POLL_S)
            if worker.processed != seen:
                seen, since = worker.processed, time.monotonic()
            elif time.monotonic() - since > _STALL_S:
                raise RuntimeError(
                    f"the evaluate worker handled {seen} of {total} records, then nothing "
                    f"for {_STALL_S:.0f} s"
                )
        rss_after = _rss_bytes()
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
    updates = {
        name: _kafka_phase(marks[n], marks[n + 1]) for n, name in enumerate(_KAFKA_MIXES, start=1)
    }
    return {
        **updates,
        "cold_load": _kafka_phase(marks[0], marks[1]),
        "memory": {
            "evaluate_rss_bytes": rss_after,
            "rss_growth_bytes": rss_after - rss_before,
            "bytes_per_tracked_object": round((rss_after - rss_before) / tracked, 1),
        },
    }


class _Mark(NamedTuple):
    """Where the worker stood when a phase began or ended."""

    processed: int  # records handled so far
    cpu: float  # the process's CPU time
    wall: float
    loop_cpu: float  # the CPU time of the event loop's thread
    handling_cpu: float  # the part of it spent in the record handler


def _kafka_phase(start: _Mark, end: _Mark) -> dict[str, Any]:
    events, cpu = end.processed - start.processed, end.cpu - start.cpu
    handling = end.handling_cpu - start.handling_cpu
    loop = end.loop_cpu - start.loop_cpu

    def per_event(seconds: float) -> float:
        return round(seconds / events * 1e6, 1) if events else 0.0

    return {
        "events": events,
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_second": measuring.ratio(events, cpu),
        "wall_seconds": round(end.wall - start.wall, 3),
        # Where the CPU went, in microseconds per event: handling the records (decoding,
        # evaluating, storing, queueing outputs), the rest of the event loop's thread
        # (fetching, transactions, re-evaluations, posture), and the other threads.
        "cpu_us_per_event": {
            "total": per_event(cpu),
            "handling_records": per_event(handling),
            "rest_of_event_loop": per_event(loop - handling),
            "other_threads": per_event(cpu - loop),
        },
    }


def _rss_bytes() -> int:
    # Current RSS from /proc (Linux); ru_maxrss (the peak) where /proc is missing.
    with contextlib.suppress(OSError):
        fields = pathlib.Path("/proc/self/statm").read_text(encoding="ascii").split()
        return int(fields[1]) * resource.getpagesize()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ``bench ingest`` lives with the ingest commands; it is listed after ``bench evaluate``.
bench_app.command("ingest")(ingest_cmd.bench_ingest)
