"""Recording: the idempotency ledger on the compacted ``remediations`` topic, and pause/resume.

Each decision is published under ``decision_key(cluster, uid, check, baseline version,
resourceVersion)`` before acting (``planned``) and after (``verified``, ``escalated`` ...).
Every replica reads the whole topic from the beginning and keeps the latest record per key, so a
redelivered finding, or one whose earlier attempt crashed between apply and audit, finds the
earlier decision and is never written twice. The same topic carries the kill switch: a control
record under the key ``control/pause`` that every replica sees within a poll interval.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiokafka
import msgspec

from kposture.remediate import throttling
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, remediation, topics

log = logging.getLogger(__name__)

Phase = remediation.Phase
PAUSE_KEY = "control/pause"
CONTROL_TYPE = "io.kposture.remediation.control.v1"
_POLL_MS = 200
_FRESH_MS = 1500  # a partition's last fetch must be this recent to count as current

TERMINAL = frozenset(
    {
        Phase.DRY_RUN,
        Phase.APPLIED,
        Phase.VERIFIED,
        Phase.ROLLED_BACK,
        Phase.ESCALATED,
        Phase.SKIPPED,
        Phase.NO_OP,
        Phase.FAILED,
    }
)
"""Phases after which a redelivery of the same finding is a no-op."""


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The kill switch record: paused or not, by whom and why."""

    paused: bool
    actor: str
    reason: str
    at: common.Timestamp


class Ledger:
    """The latest decision per key, and the latest control record (pure state)."""

    def __init__(self) -> None:
        self.decisions: dict[str, remediation.RemediationAction] = {}
        self._keys_by_id: dict[str, str] = {}
        self.control: Control | None = None

    def put(self, key: str, action: remediation.RemediationAction) -> None:
        """Remember ``action`` as the latest decision under ``key``."""
        self.decisions[key] = action
        self._keys_by_id[action.action_id] = key

    def get(self, key: str) -> remediation.RemediationAction | None:
        """The latest decision under ``key``."""
        return self.decisions.get(key)

    def find(self, action_id: str) -> remediation.RemediationAction | None:
        """The latest state of the action ``action_id``."""
        key = self._keys_by_id.get(action_id)
        return None if key is None else self.decisions.get(key)

    @property
    def paused(self) -> bool:
        """True when the last control record paused remediation."""
        return self.control is not None and self.control.paused


def new_action_id() -> str:
    """A fresh action id (short enough to type in ``kposture remediation approve``)."""
    return uuid.uuid4().hex[:12]


class KafkaLedger:
    """Reads and writes the remediations topic; keeps a :class:`Ledger` current."""

    def __init__(
        self,
        kafka_settings: settings_mod.KafkaSettings,
        producer: aiokafka.AIOKafkaProducer,
        *,
        kill_switch: throttling.KillSwitch | None = None,
        on_action: Callable[[remediation.RemediationAction], None] | None = None,
        on_control: Callable[[Control], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka_settings
        self._producer = producer
        self.topic = kafka.topic_name(kafka_settings, topics.Topic.REMEDIATIONS)
        self.ledger = Ledger()
        self._kill_switch = kill_switch
        self._on_action = on_action
        self._on_control = on_control
        self._clock = clock
        self._consumer: aiokafka.AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Read the topic up to its end, so every earlier decision is known before acting."""
        consumer = kafka.consumer(self._kafka, group_id=None, client_id="kposture-remediate-ledger")
        await consumer.start()
        self._consumer = consumer
        # The producer's lookup waits for the metadata of a topic created moments ago.
        partitions = [
            aiokafka.TopicPartition(self.topic, p)
            for p in sorted(await self._producer.partitions_for(self.topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            await self.poll_once()

    async def stop(self) -> None:
        """Stop reading."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self) -> None:
        """Follow the topic until cancelled, keeping the ledger and the kill switch current."""
        while True:
            await self.poll_once()

    async def poll_once(self) -> None:
        """Read what arrived; tell the kill switch when the view is current."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        batches = await consumer.getmany(timeout_ms=_POLL_MS)
        for messages in batches.values():
            for message in messages:
                self._apply(message)
        if self._kill_switch is not None and await self._current(consumer):
            self._kill_switch.heartbeat(self._clock())

    async def _current(self, consumer: aiokafka.AIOKafkaConsumer) -> bool:
        now_ms = time.time() * 1000
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            polled = consumer.last_poll_timestamp(tp)
            if highwater is None or polled is None or now_ms - polled > _FRESH_MS:
                return False
            if await consumer.position(tp) < highwater:
                return False
        return True

    def _apply(self, message: Any) -> None:
        if message.value is None:
            return  # a tombstone: compaction housekeeping, not a decision
        key = message.key.decode() if message.key else ""
        try:
            event = envelope.from_record(message.headers or (), message.value)
            if event.type == CONTROL_TYPE:
                control = codec.decode(event.data, Control)
                self.observe_control(control)
                return
            action = envelope.unwrap(event)
        except codec.DecodeError as exc:
            log.warning("skipping an undecodable remediations record at %s: %s", key, exc.reason)
            return
        if isinstance(action, remediation.RemediationAction):
            self.ledger.put(key, action)
            if self._on_action is not None:
                self._on_action(action)

    def observe_control(self, control: Control) -> None:
        """Apply a pause or resume record (read from the topic, or just written)."""
        self.ledger.control = control
        if self._kill_switch is not None:
            self._kill_switch.observe(paused=control.paused, reason=control.reason)
        if self._on_control is not None:
            self._on_control(control)

    async def record(self, action: remediation.RemediationAction) -> None:
        """Publish ``action`` under its decision key and remember it (read your own writes)."""
        message = envelope.wrap(
            action,
            event_type=codec.REMEDIATION_TYPE,
            source=f"kposture://{action.cluster}/remediate",
            subject=action.ref.subject,
        )
        await kafka.publish(self._producer, self.topic, key=action.key, event=message)
        self.ledger.put(action.key, action)

    async def set_paused(self, *, paused: bool, actor: str, reason: str) -> Control:
        """Publish a pause (or resume) record; every replica applies it on its next poll."""
        control = Control(paused=paused, actor=actor, reason=reason, at=common.utcnow())
        message = envelope.CloudEvent(
            id=uuid.uuid4().hex,
            source="kposture://control/remediate",
            type=CONTROL_TYPE,
            subject=PAUSE_KEY,
            time=control.at,
            data=codec.encode(control),
        )
        await kafka.publish(self._producer, self.topic, key=PAUSE_KEY, event=message)
        self.observe_control(control)
        return control


@contextlib.asynccontextmanager
async def opened(kafka_settings: settings_mod.KafkaSettings, *, client_id: str) -> Any:
    """A started producer and a caught-up ledger, for the CLI commands; both closed after."""
    producer = kafka.producer(kafka_settings, client_id=client_id)
    await producer.start()
    ledger = KafkaLedger(kafka_settings, producer)
    try:
        await ledger.start()
        yield ledger
    finally:
        await ledger.stop()
        await producer.stop()
