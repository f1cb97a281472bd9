"""``kposture demo``: the main job on one machine, against the real local environment.

Today it is the foundation's smoke run: start the environment, create the topics, send a
CloudEvent through the real broker and read it back, and list the namespaces of every cluster
through its kubeconfig context. It exits non-zero, with the reason, if any step fails.
"""

from __future__ import annotations

import asyncio
import time

import typer
from kubernetes_asyncio import client

from kposture.cli.devenv import environment, processes
from kposture.runtime import kafka, kube
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, resources, topics


def run(clusters: int = typer.Option(2, "--clusters", min=1, max=9)) -> None:
    """Start the local environment and run the end-to-end smoke check."""
    try:
        env = environment.up(clusters_count=clusters)
    except processes.DevEnvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"environment ready in {env.start_seconds:.1f}s: {env.as_json()}")
    asyncio.run(_smoke(env))


async def _smoke(env: environment.Environment) -> None:
    kafka_cfg = settings_mod.KafkaSettings(bootstrap_servers=env.kafka_bootstrap)
    created = await kafka.create_topics(kafka_cfg)
    typer.echo(f"topics: {', '.join(f'{n} ({s})' for n, s in sorted(created.items()))}")
    await _kafka_round_trip(kafka_cfg)
    for context in env.contexts:
        cluster = settings_mod.ClusterSettings(
            name=context, kubeconfig=str(env.kubeconfig), context=context
        )
        api = await kube.api_client(cluster)
        try:
            names = [
                ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items
            ]
        finally:
            await api.close()
        typer.echo(f"{context}: namespaces {', '.join(sorted(names))}")


async def _kafka_round_trip(kafka_cfg: settings_mod.KafkaSettings) -> None:
    topic = kafka.topic_name(kafka_cfg, topics.Topic.RESOURCES)
    event = resources.ResourceEvent(
        cluster="demo",
        change=resources.Change.SYNCED,
        ref=common.ObjectRef(
            api_version="v1", kind="Namespace", name="demo", uid=f"smoke-{time.time_ns()}"
        ),
        object={"metadata": {"name": "demo"}},
        digest="smoke",
        observed_at=common.utcnow(),
    )
    ce = envelope.wrap(
        event, event_type=codec.resource_type(event.change), source="kposture://demo/demo"
    )
    producer = kafka.producer(kafka_cfg, client_id="kposture-demo")
    await producer.start()
    try:
        sent = await kafka.publish(producer, topic, key=event.key, event=ce)
    finally:
        await producer.stop()
    consumer = kafka.consumer(kafka_cfg, group_id=None, client_id="kposture-demo")
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    _, decoded = envelope.decode_record(record.headers, record.value)
    if decoded != event:
        raise RuntimeError("the event read back differs from the event sent")
    typer.echo(f"kafka: sent and read back {ce.type} at {topic}[{sent.partition}]@{sent.offset}")
