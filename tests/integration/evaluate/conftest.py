"""Fixtures for the evaluate app on the real local broker: settings, producers and readers.

Only Kafka is needed here, so the broker of the shared local environment is started (or
reused) on its own, exactly as ``kposture dev up`` starts it; the apiservers are not. If the
broker cannot start, the fixture fails with the reason: these tests never skip.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from evaluate_harness import PARTITIONS, Bus, Reader

from kposture.cli.devenv import environment, processes
from kposture.cli.devenv import kafka as devkafka
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import topics


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The shared local broker's bootstrap address (started if it is not running)."""
    try:
        endpoint = devkafka.start_broker(
            state_dir=environment.kafka_state(), jar_dir=devkafka.ensure_jars()
        )
    except processes.DevEnvError as exc:
        pytest.fail(f"the local Kafka broker cannot start: {exc}")
    return endpoint.bootstrap


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: pathlib.Path) -> settings_mod.Settings:
    """Settings with a topic prefix and an app id unique to the test, and no built-ins."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS
        ),
        evaluate=settings_mod.EvaluateSettings(
            baselines=[],
            app_id=f"{prefix}-evaluate",
            data_dir=str(tmp_path / "evaluate"),
            posture_interval_s=60.0,
            http=settings_mod.HttpSettings(port=0),
        ),
    )


@pytest.fixture
async def bus(settings: settings_mod.Settings) -> AsyncIterator[Bus]:
    """The topics created, and a producer to feed them."""
    await kafka.create_topics(settings.kafka)
    producer = kafka.producer(settings.kafka, client_id="test-producer")
    await producer.start()
    try:
        yield Bus(settings, producer)
    finally:
        await producer.stop()


@pytest.fixture
async def reader(settings: settings_mod.Settings) -> AsyncIterator[Callable[[topics.Topic], Any]]:
    """A factory of started readers, stopped after the test."""
    started: list[Reader] = []

    async def make(topic: topics.Topic) -> Reader:
        made = Reader(settings, topic)
        await made.start()
        started.append(made)
        return made

    try:
        yield make
    finally:
        for made in started:
            await made.stop()
