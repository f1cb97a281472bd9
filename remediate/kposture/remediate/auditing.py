"""Auditing: every decision becomes an AuditEvent sealed into the hash chain (topic ``audit``).

The audit topic has one partition, so the chain is one total order. On start the auditor
reads the last record and continues the chain from it; each event is sealed
(:func:`audit.seal`) and published before the next is sealed, under a lock, so one process
never forks its own chain. :func:`read_all` and :func:`verify` serve ``kposture audit verify``
and the rollback command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiokafka
import msgspec

from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, codec, common, envelope, topics

ACTOR = "kposture-remediate"
_READ_TIMEOUT_MS = 500


class AuditSink(Protocol):
    """Where sealed events go; the service only needs this."""

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent: ...


class BatchSink(Protocol):
    """A sink that can seal and publish many events at once (one round trip, not one each)."""

    async def record_many(self, events: Sequence[audit.AuditEvent]) -> list[audit.AuditEvent]: ...


class AuditBatcher:
    """An :class:`AuditSink` that coalesces the events recorded meanwhile into one publish.

    ``record`` queues the event and waits until it is on the topic, so every caller still
    knows its decision is audited before its offset is committed. Events queued while a batch
    is being published go out together in the next one, in the order they were queued; a sink
    without ``record_many`` gets them one by one (still in order). Under churn thousands of
    ``skipped`` decisions thus cost a few publishes, and an enforce finding's events wait for
    at most one batch instead of every event queued before them.
    """

    def __init__(self, sink: AuditSink, *, max_batch: int = 500) -> None:
        self.sink = sink
        self.max_batch = max(1, max_batch)
        self.batches = 0  # publishes done, for tests and logs
        self._queued: list[tuple[audit.AuditEvent, asyncio.Future[audit.AuditEvent]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        """Queue ``event`` for the next batch; the sealed event once it is published."""
        future: asyncio.Future[audit.AuditEvent] = asyncio.get_running_loop().create_future()
        self._queued.append((event, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="remediate-audit-batch")
        return await future

    async def _flush(self) -> None:
        while self._queued:
            batch = self._queued[: self.max_batch]
            del self._queued[: self.max_batch]
            try:
                sealed = await self._publish([event for event, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to each waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for _, future in [*batch, *self._queued]:
                    future.cancel()
                self._queued.clear()
                raise
            for (_, future), event in zip(batch, sealed, strict=True):
                if not future.done():
                    future.set_result(event)

    async def _publish(self, events: list[audit.AuditEvent]) -> list[audit.AuditEvent]:
        self.batches += 1
        record_many = getattr(self.sink, "record_many", None)
        if record_many is not None and len(events) > 1:
            sealed: list[audit.AuditEvent] = await record_many(events)
            return sealed
        return [await self.sink.record(event) for event in events]


def new_event(
    action: audit.Action,
    outcome: audit.Outcome,
    *,
    rationale: str,
    cluster: str,
    ref: common.ObjectRef,
    finding_key: str,
    check: str,
    action_id: str,
    started_at: Any,
    pre_image: Mapping[str, Any] | None = None,
    patch: Mapping[str, Any] | None = None,
    dry_run_result: str = "",
    actor: str = ACTOR,
) -> audit.AuditEvent:
    """An unsealed event; :meth:`Chain.seal` links it."""
    return audit.AuditEvent(
        audit_id=uuid.uuid4().hex,
        actor=actor,
        action=action,
        outcome=outcome,
        rationale=rationale,
        cluster=cluster,
        ref=ref,
        finding_key=finding_key,
        check=check,
        action_id=action_id,
        pre_image=dict(pre_image or {}),
        patch=dict(patch or {}),
        dry_run_result=dry_run_result,
        started_at=started_at,
        finished_at=common.utcnow(),
    )


class Chain:
    """The tip of the hash chain: seals each new event after the previous one."""

    def __init__(self, last: audit.AuditEvent | None) -> None:
        self.last = last

    def seal(self, event: audit.AuditEvent) -> audit.AuditEvent:
        """Link ``event`` after the tip and make it the new tip."""
        self.last = audit.seal(event, previous=self.last)
        return self.last


@dataclasses.dataclass(frozen=True)
class Record:
    """One record of the audit topic: its offset and its event, or why it does not decode."""

    offset: int
    event: audit.AuditEvent | None
    error: str = ""


async def read_all(kafka_settings: settings_mod.KafkaSettings, topic: str) -> list[Record]:
    """Every record of the (single-partition) audit topic, in order."""
    consumer = kafka.consumer(
        kafka_settings,
        group_id=None,
        client_id="kposture-audit-reader",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partition = aiokafka.TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        out: list[Record] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=_READ_TIMEOUT_MS)
            out.extend(_decode(message) for message in batch.get(partition, ()))
        return out
    finally:
        await consumer.stop()


def _decode(message: Any) -> Record:
    try:
        _, model = envelope.decode_record(message.headers or (), message.value)
    except codec.DecodeError as exc:
        return Record(message.offset, None, exc.reason)
    if not isinstance(model, audit.AuditEvent):
        return Record(message.offset, None, f"not an audit event: {type(model).__name__}")
    return Record(message.offset, model)


def verify(records: list[Record]) -> str | None:
    """The first break of the chain, described for a human, or None when it is intact."""
    events: list[audit.AuditEvent] = []
    for record in records:
        if record.event is None:
            return f"offset {record.offset}: altered: not a valid audit event ({record.error})"
        events.append(record.event)
    broken = audit.verify_chain(events)
    if broken is None:
        return None
    return (
        f"offset {records[broken.index].offset}: seq {broken.seq}, "
        f"audit_id {broken.audit_id}: {broken.reason}"
    )


async def last_event(
    kafka_settings: settings_mod.KafkaSettings, topic: str
) -> audit.AuditEvent | None:
    """The last decodable event of the audit topic, where the chain continues."""
    consumer = kafka.consumer(
        kafka_settings, group_id=None, client_id="kposture-audit-tip", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partition = aiokafka.TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        # Walk back a few records at a time: the last one may be a stray non-event.
        start = end
        while start > 0:
            start = max(0, start - 16)
            consumer.seek(partition, start)
            found: audit.AuditEvent | None = None
            while await consumer.position(partition) < end:
                batch = await consumer.getmany(partition, timeout_ms=_READ_TIMEOUT_MS)
                for message in batch.get(partition, ()):
                    decoded = _decode(message)
                    if decoded.event is not None:
                        found = decoded.event
            if found is not None:
                return found
            end = start
        return None
    finally:
        await consumer.stop()


class KafkaAuditor:
    """Seals events and publishes them to the audit topic, one at a time."""

    def __init__(
        self,
        producer: aiokafka.AIOKafkaProducer,
        topic: str,
        *,
        chain: Chain,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self.chain = chain
        self._lock = asyncio.Lock()

    @classmethod
    async def resume(
        cls, kafka_settings: settings_mod.KafkaSettings, producer: aiokafka.AIOKafkaProducer
    ) -> KafkaAuditor:
        """An auditor that continues the chain found on the topic."""
        topic = kafka.topic_name(kafka_settings, topics.Topic.AUDIT)
        return cls(producer, topic, chain=Chain(await last_event(kafka_settings, topic)))

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        """Seal ``event`` after the tip and publish it; the sealed event."""
        async with self._lock:
            previous = self.chain.last
            sealed = self.chain.seal(event)
            try:
                await kafka.publish(
                    self._producer, self.topic, key=sealed.cluster, event=_message(sealed)
                )
            except BaseException:
                # Not on the topic: the next event must link to the previous tip, not to this.
                self.chain.last = previous
                raise
            return sealed

    async def record_many(self, events: Sequence[audit.AuditEvent]) -> list[audit.AuditEvent]:
        """Seal ``events`` in order after the tip and publish them together; the sealed events.

        All are sent before any acknowledgement is awaited (the idempotent producer keeps
        them in order on the single partition), so a batch costs about one round trip. When
        one fails the tip goes back to the last event before it and the batch fails.
        """
        async with self._lock:
            previous = self.chain.last
            sealed = [self.chain.seal(event) for event in events]
            deliveries: list[Any] = []
            try:
                for event in sealed:
                    message = _message(event)
                    deliveries.append(
                        await self._producer.send(
                            self.topic,
                            value=message.data,
                            key=event.cluster.encode(),
                            headers=kafka.record_headers(message),
                        )
                    )
                results = await asyncio.gather(*deliveries, return_exceptions=True)
            except BaseException:
                self.chain.last = previous
                raise
            for index, result in enumerate(results):
                if isinstance(result, BaseException):
                    self.chain.last = sealed[index - 1] if index else previous
                    raise result
            return sealed


def _message(sealed: audit.AuditEvent) -> envelope.CloudEvent:
    return envelope.wrap(
        sealed,
        event_type=codec.AUDIT_TYPE,
        source=f"kposture://{sealed.cluster}/remediate",
        subject=sealed.ref.subject,
        event_id=sealed.audit_id,
    )


def event_json(event: audit.AuditEvent) -> dict[str, Any]:
    """An event as plain JSON data (for the CLI)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data
