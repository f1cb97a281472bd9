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
from collections.abc import Mapping
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
            message = envelope.wrap(
                sealed,
                event_type=codec.AUDIT_TYPE,
                source=f"kposture://{sealed.cluster}/remediate",
                subject=sealed.ref.subject,
                event_id=sealed.audit_id,
            )
            try:
                await kafka.publish(self._producer, self.topic, key=sealed.cluster, event=message)
            except BaseException:
                # Not on the topic: the next event must link to the previous tip, not to this.
                self.chain.last = previous
                raise
            return sealed


def event_json(event: audit.AuditEvent) -> dict[str, Any]:
    """An event as plain JSON data (for the CLI)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data
