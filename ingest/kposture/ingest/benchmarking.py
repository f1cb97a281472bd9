"""``kposture bench ingest``: how fast ingest lists a cluster into Kafka, and its write latency.

Two numbers, against a real cluster and broker:

* cold list: ``objects`` ConfigMaps are created in a fresh namespace, then a fresh ingest
  instance (own topic prefix, watching ConfigMaps only) is started; the time from its start to
  the last of those objects on the topic gives objects per second (start-up included);
* write latency: ``samples`` label changes, one at a time; each is timed from just before the
  API write to the moment its record is read back from the topic (p50 and p99).

The namespace is deleted afterwards. Nothing here is used by the service itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
import uuid
from typing import Any

import msgspec
from aiokafka import TopicPartition

from kposture.ingest import service
from kposture.runtime import health, kafka, kube
from kposture.runtime import settings as settings_mod
from kposture.schemas import envelope, resources, topics

_WRITERS = 16  # concurrent creates while preparing the objects


@dataclasses.dataclass(frozen=True)
class Result:
    """What one bench run measured (times in seconds unless the name says otherwise)."""

    objects: int
    cold_list_s: float
    objects_per_s: float
    samples: int
    latency_p50_ms: float
    latency_p99_ms: float

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready mapping."""
        return dataclasses.asdict(self)


async def run(
    settings: settings_mod.Settings,
    *,
    cluster: settings_mod.ClusterSettings,
    objects: int = 1000,
    samples: int = 200,
) -> Result:
    """Run both measurements on ``cluster``; see the module docstring."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    bench = msgspec.structs.replace(
        settings,
        kafka=msgspec.structs.replace(settings.kafka, topic_prefix=prefix),
        clusters=[cluster],
        ingest=msgspec.structs.replace(
            settings.ingest, kinds=["v1/ConfigMap"], http=settings_mod.HttpSettings(port=0)
        ),
    )
    api = await kube.api_client(cluster)
    namespace = prefix
    try:
        await _call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        gate = asyncio.Semaphore(_WRITERS)

        async def create(n: int) -> None:
            async with gate:
                await _call(api, "POST", path, {"metadata": {"name": f"cm-{n}"}})

        await asyncio.gather(*(create(n) for n in range(objects)))
        tail = _Tail(kafka.topic_name(bench.kafka, topics.Topic.RESOURCES), bench.kafka, namespace)
        stop = asyncio.Event()
        started = time.monotonic()
        ingest = asyncio.create_task(service.run(bench, readiness=health.Readiness(), stop=stop))
        try:
            await tail.start()
            while len(tail.seen) < objects:
                await tail.poll()
            cold = time.monotonic() - started
            latencies = []
            for seq in range(samples):
                target = f"cm-{seq % objects}"
                written = time.monotonic()
                patch = {"metadata": {"labels": {"seq": str(seq)}}}
                await _call(api, "PATCH", f"{path}/{target}", patch, merge=True)
                while tail.arrivals.get((target, str(seq))) is None:
                    await tail.poll()
                latencies.append(tail.arrivals[(target, str(seq))] - written)
        finally:
            stop.set()
            await ingest
            await tail.stop()
    finally:
        await _call(api, "DELETE", f"/api/v1/namespaces/{namespace}", None, check=False)
        await api.close()
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if samples > 1 else []
    return Result(
        objects=objects,
        cold_list_s=round(cold, 3),
        objects_per_s=round(objects / cold, 1),
        samples=samples,
        latency_p50_ms=round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
        latency_p99_ms=round(quantiles[98] * 1000, 1) if quantiles else 0.0,
    )


async def _call(
    api: Any, method: str, path: str, body: Any, *, merge: bool = False, check: bool = True
) -> None:
    content_type = "application/merge-patch+json" if merge else "application/json"
    response = await api.call_api(
        path,
        method,
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    try:
        await response.read()
    finally:
        response.release()
    if check and not 200 <= response.status < 300:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}")


class _Tail:
    """Reads the bench topic as it grows; notes when each object and each label change arrive."""

    def __init__(self, topic: str, kafka_settings: settings_mod.KafkaSettings, namespace: str):
        self._topic = topic
        self._namespace = namespace
        self._consumer = kafka.consumer(kafka_settings, group_id=None, client_id="kposture-bench")
        self._assigned = False
        self.seen: set[str] = set()
        self.arrivals: dict[tuple[str, str], float] = {}

    async def start(self) -> None:
        """Connect the consumer."""
        await self._consumer.start()

    async def stop(self) -> None:
        """Close the consumer."""
        await self._consumer.stop()

    async def poll(self) -> None:
        """Read what arrived (subscribing once the topic exists) and note arrival times."""
        if not self._assigned:
            if self._topic not in await self._consumer.topics():
                await asyncio.sleep(0.05)
                return
            self._consumer.subscribe([self._topic])
            self._assigned = True
        batches: dict[TopicPartition, Any] = await self._consumer.getmany(timeout_ms=50)
        now = time.monotonic()
        for records in batches.values():
            for record in records:
                if record.value is None:
                    continue
                _, event = envelope.decode_record(list(record.headers), record.value)
                if not isinstance(event, resources.ResourceEvent):
                    continue
                if event.ref.namespace != self._namespace:
                    continue
                self.seen.add(event.ref.name)
                seq = (event.object.get("metadata", {}).get("labels") or {}).get("seq")
                if seq is not None:
                    self.arrivals.setdefault((event.ref.name, seq), now)
