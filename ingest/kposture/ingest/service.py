"""The ingest service: the watchers of every cluster, the publisher, and the health server.

Start-up reads the current inventory from the topic (so the first lists publish only what
changed while ingest was down, deletes included), then runs one supervisor per cluster and one
publisher task in a TaskGroup until ``stop`` is set. Shutdown stops the watchers first, gives
the publisher a moment to flush what is buffered, then stops it: anything unflushed is simply
observed again by the next start's lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import prometheus_client
from aiokafka import errors as kafka_errors

from kposture.ingest import inventory, kubeapi, publishing, reconciling, supervising, watching
from kposture.ingest import metrics as metrics_mod
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import topics

log = logging.getLogger(__name__)

_DRAIN_S = 10.0
_SEED_TIMEOUT_S = 60.0


def kinds_of(settings: settings_mod.IngestSettings) -> list[watching.KindRef]:
    """The configured kinds (the defaults if none), parsed; SettingsError if one is malformed."""
    try:
        return [watching.KindRef.parse(k) for k in settings.kinds or watching.DEFAULT_KINDS]
    except ValueError as exc:
        raise settings_mod.SettingsError(f"ingest.kinds: {exc}") from exc


async def run(
    settings: settings_mod.Settings, *, readiness: health.Readiness, stop: asyncio.Event
) -> None:
    """Run ingest until ``stop`` is set."""
    kinds = kinds_of(settings.ingest)
    metrics = metrics_mod.Metrics(prometheus_client.CollectorRegistry())
    clock = watching.SystemClock()
    publisher = publishing.Publisher(
        topic=kafka.topic_name(settings.kafka, topics.Topic.RESOURCES),
        open_producer=lambda: _open_producer(settings.kafka),
        buffer_size=settings.ingest.buffer_size,
        metrics=metrics,
        readiness=readiness,
        clock=clock,
        backoff=reconciling.Backoff(
            initial_s=settings.ingest.backoff_initial_s, max_s=settings.ingest.backoff_max_s
        ),
        traced=settings.telemetry.tracing,
    )
    runner = None
    http = settings.ingest.http
    if http.port:
        app = health.make_app(readiness, registry=metrics.registry)
        runner = await health.serve(app, host=http.host, port=http.port)
    try:
        seeds = await _seeds(settings.kafka)
        async with asyncio.TaskGroup() as group:
            publishing_task = group.create_task(publisher.run(), name="ingest/publish")
            supervisors = [
                group.create_task(
                    supervising.supervise(
                        cluster,
                        kinds=kinds,
                        connect=kubeapi.connect,
                        sink=publisher,
                        settings=settings.ingest,
                        metrics=metrics,
                        readiness=readiness,
                        clock=clock,
                        seed=seeds.get(cluster.name),
                    ),
                    name=f"ingest/cluster/{cluster.name}",
                )
                for cluster in settings.clusters
            ]
            log.info(
                "ingest started",
                extra={"clusters": [c.name for c in settings.clusters], "kinds": len(kinds)},
            )
            await stop.wait()
            for task in supervisors:
                task.cancel()
            if supervisors:
                await asyncio.wait(supervisors)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_S):
                    await publisher.drain()
            publishing_task.cancel()
    finally:
        if runner is not None:
            await runner.cleanup()
    log.info("ingest stopped", extra={"unpublished": publisher.depth()})


async def _open_producer(kafka_settings: settings_mod.KafkaSettings) -> publishing.Producer:
    # Creating the topic here (idempotently) means a fresh broker gets it with the catalogue's
    # compaction settings, not with auto-created defaults.
    spec = [
        s
        for s in topics.catalogue(
            prefix=kafka_settings.topic_prefix, partitions=kafka_settings.partitions
        )
        if s.topic is topics.Topic.RESOURCES
    ]
    await kafka.create_topics(kafka_settings, spec)
    producer = kafka.producer(kafka_settings, client_id="kposture-ingest")
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer  # type: ignore[no-any-return]


async def _seeds(
    kafka_settings: settings_mod.KafkaSettings,
) -> dict[str, dict[str, dict[str, reconciling.Observed]]]:
    """What the topic says exists, per cluster, kind and uid; empty if it cannot be read."""
    try:
        async with asyncio.timeout(_SEED_TIMEOUT_S):
            current = await inventory.read(kafka_settings)
    except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
        # Not fatal: the first lists then publish every object as added, and deletes made while
        # ingest was down reach consumers only through their next full snapshot.
        log.warning("inventory unreadable, starting unseeded", extra={"error": type(exc).__name__})
        return {}
    seeds: dict[str, dict[str, dict[str, reconciling.Observed]]] = {}
    for event in current.objects.values():
        kind = f"{event.ref.api_version}/{event.ref.kind}"
        per_kind = seeds.setdefault(event.cluster, {}).setdefault(kind, {})
        per_kind[event.ref.uid] = reconciling.Observed(event.object, event.digest)
    return seeds
