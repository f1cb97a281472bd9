"""CloudEvents round-trip through the real broker with the production Kafka factories."""

from __future__ import annotations

import asyncio

from kposture.cli.devenv import environment
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, resources, topics


async def test_topics_are_created_idempotently_with_their_cleanup_policy(
    local_env: environment.Environment, topic_prefix: str
) -> None:
    """`topics create` makes every catalogue topic once; a second run finds them all existing."""
    cfg = settings_mod.KafkaSettings(
        bootstrap_servers=local_env.kafka_bootstrap, topic_prefix=topic_prefix
    )
    first = await kafka.create_topics(cfg)
    second = await kafka.create_topics(cfg)
    assert set(first.values()) == {"created"}
    assert set(second.values()) == {"exists"}
    assert len(first) == len(topics.Topic)


async def test_resource_events_round_trip_as_binary_cloudevents(
    local_env: environment.Environment, topic_prefix: str
) -> None:
    """Events sent by the idempotent producer come back decoded, in order, with ce_* headers."""
    cfg = settings_mod.KafkaSettings(
        bootstrap_servers=local_env.kafka_bootstrap, topic_prefix=topic_prefix
    )
    await kafka.create_topics(cfg)
    topic = kafka.topic_name(cfg, topics.Topic.RESOURCES)
    sent = [
        resources.ResourceEvent(
            cluster="kposture-1",
            change=resources.Change.MODIFIED,
            ref=common.ObjectRef(
                api_version="v1",
                kind="Pod",
                name="web",
                uid="uid-1",
                namespace="shop",
                resource_version=str(i),
            ),
            object={"metadata": {"name": "web"}, "spec": {"n": i}},
            digest=f"d{i}",
            observed_at=common.utcnow(),
        )
        for i in range(20)
    ]
    producer = kafka.producer(cfg, client_id="test")
    await producer.start()
    try:
        for event in sent:
            ce = envelope.wrap(
                event,
                event_type=codec.resource_type(event.change),
                source="kposture://kposture-1/ingest",
                subject=event.ref.subject,
            )
            await kafka.publish(producer, topic, key=event.key, event=ce)
    finally:
        await producer.stop()

    consumer = kafka.consumer(cfg, topic, group_id=None, client_id="test")
    await consumer.start()
    received = []
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    received.extend(records)
    finally:
        await consumer.stop()
    decoded = [envelope.decode_record(r.headers, r.value) for r in received]
    assert [model for _, model in decoded] == sent
    assert {r.key for r in received} == {b"kposture-1/uid-1"}
    assert all(ce.type == "io.kposture.resource.modified.v1" for ce, _ in decoded)
    assert all(ce.subject == "shop/Pod/web" for ce, _ in decoded)
