"""Helpers for the evaluate app tests: produce events and policy, read what comes out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kposture.evaluate import app as evaluate_app
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, policy, resources, topics

CLUSTER = "c1"
PARTITIONS = 3


class Bus:
    """Produces resource events and policy documents; reads what the app publishes."""

    def __init__(self, settings: settings_mod.Settings, producer: Any) -> None:
        self.settings = settings
        self.producer = producer

    def name(self, topic: topics.Topic) -> str:
        """The real name of a logical topic."""
        return kafka.topic_name(self.settings.kafka, topic)

    async def resource(
        self, change: resources.Change, name: str, obj: dict[str, Any], *, uid: str | None = None
    ) -> resources.ResourceEvent:
        """Produce one resource event for a pod in namespace ``shop``."""
        ref = common.ObjectRef(
            api_version=obj.get("apiVersion", "v1"),
            kind=obj.get("kind", "Pod"),
            name=name,
            uid=uid or f"uid-{name}",
            namespace=obj.get("metadata", {}).get("namespace", "shop"),
        )
        event = resources.ResourceEvent(
            cluster=CLUSTER,
            change=change,
            ref=ref,
            object=obj,
            digest=hashlib.sha256(repr(obj).encode()).hexdigest(),
            observed_at=common.utcnow(),
        )
        wrapped = envelope.wrap(
            event,
            event_type=codec.resource_type(change),
            source=f"kposture://{CLUSTER}/ingest",
            subject=ref.subject,
        )
        await kafka.publish(
            self.producer, self.name(topics.Topic.RESOURCES), key=event.key, event=wrapped
        )
        return event

    async def raw(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Produce an arbitrary record to the resources topic."""
        await self.producer.send_and_wait(
            self.name(topics.Topic.RESOURCES), key=key, value=value, headers=headers
        )

    async def baseline(self, source: str, *, name: str, version: str) -> None:
        """Publish a baseline document."""
        document = policy.PolicyDocument(
            kind=policy.DocumentKind.BASELINE,
            name=name,
            version=version,
            source=source,
            digest=hashlib.sha256(source.encode()).hexdigest(),
            publisher="test",
            published_at=common.utcnow(),
        )
        wrapped = envelope.wrap(document, event_type=codec.POLICY_TYPE, source="kposture://-/cli")
        await kafka.publish(
            self.producer, self.name(topics.Topic.BASELINES), key=document.key, event=wrapped
        )


class Reader:
    """Reads one topic from the beginning and decodes its records."""

    def __init__(self, settings: settings_mod.Settings, topic: topics.Topic) -> None:
        self._consumer = kafka.consumer(
            settings.kafka,
            kafka.topic_name(settings.kafka, topic),
            group_id=None,
            client_id="test-reader",
        )
        self.records: list[tuple[str, Any]] = []

    async def start(self) -> None:
        """Start consuming."""
        await self._consumer.start()

    async def stop(self) -> None:
        """Stop consuming."""
        await self._consumer.stop()

    async def until(
        self, done: Callable[[list[tuple[str, Any]]], bool], *, timeout_s: float = 30.0
    ) -> list[tuple[str, Any]]:
        """Read until ``done(records)`` holds; fail with what arrived on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done(self.records):
                    await self._poll(500)
        except TimeoutError:
            pytest.fail(f"timed out; received {[(k, _brief(m)) for k, m in self.records]}")
        return self.records

    async def settle(self, quiet_s: float = 2.0) -> list[tuple[str, Any]]:
        """Read whatever else arrives within ``quiet_s``."""
        await self._poll(int(quiet_s * 1000))
        return self.records

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            for record in records:
                _, model = envelope.decode_record(record.headers, record.value)
                self.records.append((record.key.decode(), model))


def _brief(model: Any) -> Any:
    state = getattr(model, "state", None)
    return (getattr(model, "check", None), str(state)) if state is not None else model


@contextlib.asynccontextmanager
async def running(settings: settings_mod.Settings) -> AsyncIterator[evaluate_app.EvaluateApp]:
    """An evaluate worker running in this event loop."""
    worker = evaluate_app.EvaluateApp(settings)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
