"""Helpers for the ingest integration tests: apiserver writes, the service, the topic.

Imported by the tests and by ``conftest.py`` of this folder (pytest puts the folder on
``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from kubernetes_asyncio import client

from kposture.cli.devenv import environment
from kposture.ingest import service
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import envelope, resources, topics

TEST_KINDS = [
    "v1/Namespace",
    "v1/ServiceAccount",
    "v1/Service",
    "v1/Secret",
    "v1/ConfigMap",
    "v1/Pod",
    "apps/v1/Deployment",
    "example.com/v1/Widget",  # served by no cluster: must be skipped, not fatal
]


class Kube:
    """Raw JSON requests to one apiserver, as its admin; bodies are never logged."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """Send one request and return the JSON answer; AssertionError on a non-2xx status."""
        # _preload_content=False keeps kubernetes_asyncio from logging the response body, which
        # would put the canary values of the secret tests into the captured logs.
        response = await self.api.call_api(
            path,
            method,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        try:
            data = await response.read()
        finally:
            response.release()
        assert 200 <= response.status < 300, f"{method} {path}: {response.status}"
        return dict(orjson.loads(data)) if data else {}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to collection ``path``."""
        return await self.request("POST", path, body)

    async def merge(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the object at ``path``."""
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> None:
        """Delete the object at ``path``."""
        await self.request("DELETE", path)

    async def namespace(self, name: str) -> None:
        """Create namespace ``name``."""
        await self.create("/api/v1/namespaces", {"metadata": {"name": name}})


def make_settings(
    env: environment.Environment,
    *,
    clusters: Iterable[settings_mod.ClusterSettings] | None = None,
    bootstrap: str | None = None,
    **ingest: Any,
) -> settings_mod.Settings:
    """Settings for one test: its own topic prefix, the environment's clusters by default."""
    if clusters is None:
        clusters = [
            settings_mod.ClusterSettings(
                name=f"c{i}", kubeconfig=str(env.kubeconfig), context=context
            )
            for i, context in enumerate(env.contexts, start=1)
        ]
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=bootstrap or env.kafka_bootstrap,
            topic_prefix=f"it-{uuid.uuid4().hex[:10]}",
            partitions=3,
            request_timeout_ms=10_000,
        ),
        clusters=list(clusters),
        ingest=settings_mod.IngestSettings(
            **{
                "kinds": TEST_KINDS,
                "http": settings_mod.HttpSettings(port=0),
                "backoff_initial_s": 0.2,
                "backoff_max_s": 2.0,
                **ingest,
            }
        ),
    )


@contextlib.asynccontextmanager
async def running_ingest(
    settings: settings_mod.Settings, *, ready: Iterable[str] = ()
) -> AsyncIterator[health.Readiness]:
    """Run the ingest service until the block ends; wait first for the ``ready`` checks."""
    readiness = health.Readiness()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(settings, readiness=readiness, stop=stop))
    try:
        await eventually(
            lambda: task.done() or all(readiness.details().get(c, {}).get("ok") for c in ready),
            within_s=60,
        )
        if task.done():
            task.result()  # raises what stopped it
        yield readiness
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def eventually(condition: Callable[[], bool], *, within_s: float) -> None:
    """Wait until ``condition()`` holds; TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        # Polling: the conditions read state that no event signals (records, readiness).
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class TopicTail:
    """Reads the resources topic from the beginning, as it grows; keeps every record."""

    def __init__(self, settings: settings_mod.Settings) -> None:
        self.topic = kafka.topic_name(settings.kafka, topics.Topic.RESOURCES)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._assigned = False

    async def __aenter__(self) -> TopicTail:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def poll(self) -> None:
        """Fetch what is new (assigning the partitions once the topic exists)."""
        if not self._assigned:
            if self.topic not in await self.consumer.topics():
                await asyncio.sleep(0.2)
                return
            # No group: the subscription assigns every partition, read from the beginning.
            self.consumer.subscribe([self.topic])
            self._assigned = True
        batches = await self.consumer.getmany(timeout_ms=200)
        for batch in batches.values():
            self.records.extend(batch)

    async def until(
        self, condition: Callable[[list[Event]], bool], *, within_s: float = 30
    ) -> list[Event]:
        """Poll until ``condition(events)`` holds; return the events."""
        async with asyncio.timeout(within_s):
            while True:
                await self.poll()
                events = self.events()
                if condition(events):
                    return events

    def events(self) -> list[Event]:
        """Every record, decoded, in consumption order (which is per-key order)."""
        return [Event.of(r) for r in self.records]


class Event:
    """One record of the resources topic: key, type, and the event (None for a tombstone)."""

    def __init__(self, key: str, type_: str | None, event: resources.ResourceEvent | None) -> None:
        self.key = key
        self.type = type_
        self.event = event

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> Event:
        """Decode one record strictly."""
        key = (record.key or b"").decode()
        if record.value is None:
            return cls(key, None, None)
        cloud_event, model = envelope.decode_record(list(record.headers), record.value)
        assert isinstance(model, resources.ResourceEvent)
        return cls(key, cloud_event.type, model)

    @property
    def name(self) -> str:
        """``<namespace>/<name>`` of the object, empty for a tombstone."""
        return "" if self.event is None else f"{self.event.ref.namespace}/{self.event.ref.name}"

    def __repr__(self) -> str:
        return f"Event({self.key}, {self.type}, {self.name})"


def of_namespace(events: Iterable[Event], ns: str, keys: set[str] | None = None) -> list[Event]:
    """The events about objects in namespace ``ns`` (tombstones follow their key's events)."""
    chosen: list[Event] = []
    seen = set(keys or ())
    for e in events:
        if e.event is not None and e.event.ref.namespace == ns:
            seen.add(e.key)
            chosen.append(e)
        elif e.event is None and e.key in seen:
            chosen.append(e)
    return chosen
