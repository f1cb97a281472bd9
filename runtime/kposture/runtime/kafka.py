"""Kafka clients with safe defaults, topic creation, and CloudEvent publishing.

Producers are idempotent with ``acks=all``, so a retried send never duplicates or reorders a
key's records. Consumers commit offsets explicitly, after the work for a record is done, so a
crash redelivers rather than loses. aiokafka appears only here and in service adapters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from kposture.runtime import settings as settings_mod
from kposture.runtime import tracing
from kposture.schemas import envelope, topics

log = logging.getLogger(__name__)


TRANSACTIONAL_BATCH_BYTES = 1_000_000
"""The largest batch a transactional producer builds: under the broker's 1 MiB message limit."""


class KafkaAdminError(RuntimeError):
    """The broker refused an administrative request (topic creation); the message says why."""

    retriable = False


def topic_name(kafka: settings_mod.KafkaSettings, topic: topics.Topic) -> str:
    """The real name of a logical topic under the configured prefix."""
    return topics.name(topic, prefix=kafka.topic_prefix)


def producer(
    kafka: settings_mod.KafkaSettings, *, client_id: str, linger_ms: int = 5
) -> aiokafka.AIOKafkaProducer:
    """An idempotent producer with ``acks=all`` (not started)."""
    return aiokafka.AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=kafka.request_timeout_ms,
        security_protocol=kafka.security_protocol,
    )


def consumer(
    kafka: settings_mod.KafkaSettings,
    *topic_names: str,
    group_id: str | None,
    client_id: str,
    auto_offset_reset: str = "earliest",
    **extra: Any,
) -> aiokafka.AIOKafkaConsumer:
    """A consumer that commits only when told to (not started).

    It reads ``read_committed``: evaluate writes in transactions, and what an aborted one
    wrote (a crashed or fenced worker's) must never reach a reader.
    """
    extra.setdefault("isolation_level", "read_committed")
    return aiokafka.AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        security_protocol=kafka.security_protocol,
        request_timeout_ms=kafka.request_timeout_ms,
        **extra,
    )


async def _admin(kafka: settings_mod.KafkaSettings) -> AIOKafkaAdminClient:
    """A started admin client; the caller closes it."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id="kposture-admin",
        security_protocol=kafka.security_protocol,
        request_timeout_ms=kafka.request_timeout_ms,
    )
    await admin.start()
    return admin


async def create_topics(
    kafka: settings_mod.KafkaSettings, specs: Iterable[topics.TopicSpec] | None = None
) -> dict[str, str]:
    """Create the catalogue's topics; existing ones are left as they are.

    Returns each topic name with ``created`` or ``exists``.
    """
    wanted = list(specs or topics.catalogue(prefix=kafka.topic_prefix, partitions=kafka.partitions))
    return await _create(
        kafka,
        [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in wanted
        ],
    )


async def create_changelogs(kafka: settings_mod.KafkaSettings, names: Iterable[str]) -> None:
    """Create compacted changelog topics of the configured partition count, if missing."""
    await _create(
        kafka,
        [
            NewTopic(
                name=name,
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            for name in names
        ],
    )


async def _create(kafka: settings_mod.KafkaSettings, wanted: list[NewTopic]) -> dict[str, str]:
    admin = await _admin(kafka)
    try:
        existing = set(await admin.list_topics())
        result = {topic.name: "exists" for topic in wanted if topic.name in existing}
        for topic in wanted:
            if topic.name in existing:
                continue
            # One request per topic: a race with another creator fails only that topic.
            # The admin client reports per-topic failures as error codes in the response,
            # not as exceptions, so each code is read here.
            try:
                response = await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                result[topic.name] = "exists"
                continue
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    result[name] = "created"
                elif code == TopicAlreadyExistsError.errno:
                    result[name] = "exists"
                else:
                    message = rest[0] if rest else ""
                    raise KafkaAdminError(f"cannot create topic {name}: error {code} {message}")
        return result
    finally:
        await admin.close()


async def delete_topics(
    kafka: settings_mod.KafkaSettings, select: Callable[[str], bool], *, batch: int = 200
) -> list[str]:
    """Delete every topic whose name ``select`` accepts; the names the broker was asked to delete.

    The broker removes a deleted topic's data in the background, so a name may still be
    listed for a moment afterwards.
    """
    admin = await _admin(kafka)
    try:
        names = sorted(t for t in await admin.list_topics() if select(t))
        for start in range(0, len(names), batch):
            await admin.delete_topics(
                names[start : start + batch], timeout_ms=kafka.request_timeout_ms
            )
        return names
    finally:
        await admin.close()


def transactional_producer(
    kafka: settings_mod.KafkaSettings, *, transactional_id: str, client_id: str
) -> aiokafka.AIOKafkaProducer:
    """A producer for one transactional id (not started; ``start`` fences older ones)."""
    return aiokafka.AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        # A record as large as the broker takes by default (an object's state, a finding with
        # a long message) fits in one batch; aiokafka's default (16 KiB) would refuse it.
        max_batch_size=TRANSACTIONAL_BATCH_BYTES,
        request_timeout_ms=kafka.request_timeout_ms,
        security_protocol=kafka.security_protocol,
    )


async def read_to_end(
    consumer: aiokafka.AIOKafkaConsumer,
    partitions: Iterable[aiokafka.TopicPartition],
    apply: Callable[[Sequence[Any]], object],
) -> None:
    """Read ``partitions`` from their beginning to their end offsets as of now, handing each
    fetch to ``apply``.

    ``consumer`` is started and not in a group. Under ``read_committed`` the end is the last
    stable offset, so a transaction still open does not hold the read up for ever; the
    markers that close transactions move the position past them too.
    """
    wanted = list(partitions)
    if not wanted:
        return
    consumer.assign(wanted)
    await consumer.seek_to_beginning(*wanted)
    ends = await consumer.end_offsets(wanted)
    left = {tp for tp in wanted if ends[tp] > 0}
    while left:
        for tp in list(left):
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
        if not left:
            return
        fetched = await consumer.getmany(*left, timeout_ms=500)
        for records in fetched.values():
            apply(records)


def record_headers(event: envelope.CloudEvent) -> list[tuple[str, bytes]]:
    """The headers to send an event with: its CloudEvent attributes and the trace context."""
    headers = event.headers()
    tracing.inject(headers)
    return headers


async def publish(
    producer_: aiokafka.AIOKafkaProducer,
    topic: str,
    *,
    key: str,
    event: envelope.CloudEvent,
) -> Any:
    """Send one CloudEvent and wait until the broker acknowledged it (``acks=all``)."""
    return await producer_.send_and_wait(
        topic, value=event.data, key=key.encode(), headers=record_headers(event)
    )


async def publish_tombstone(producer_: aiokafka.AIOKafkaProducer, topic: str, *, key: str) -> Any:
    """Send a tombstone (null value) so compaction removes ``key`` from a compacted topic."""
    return await producer_.send_and_wait(topic, value=None, key=key.encode())


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """Record headers as a dict (the last value wins), for dead letters and logs."""
    return dict(headers or ())
