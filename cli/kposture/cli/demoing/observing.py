"""Observing: follow the pipeline's output topics and wait for the records the demo expects.

One consumer, no consumer group, reads ``findings``, ``posture``, ``remediations`` and
``audit`` from their beginning (each demo run has fresh topics, so "everything" is this run).
Every decoded record is kept with its timestamp on the topic, so a wait can look at what
already arrived as well as at what is still to come; that makes the waits race-free: a finding
that arrives before the demo starts waiting for it is still found.

Latencies are measured against the record's timestamp (when it was produced to the topic), on
the same host clock as the demo's client-side write time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import aiokafka

from kposture.cli import localops
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, codec, envelope, findings, posture, remediation, topics

log = logging.getLogger(__name__)

FOLLOWED = (
    topics.Topic.RESOURCES,  # keys only: to know what ingest has published
    topics.Topic.FINDINGS,
    topics.Topic.POSTURE,
    topics.Topic.REMEDIATIONS,
    topics.Topic.AUDIT,
)


@dataclasses.dataclass(frozen=True)
class Seen:
    """One decoded record and when it reached its topic (epoch seconds)."""

    topic: topics.Topic
    model: Any
    at: float


Listener = Callable[[Seen], None]


class Observer(localops.TopicReader):
    """The demo's view of the topics: every record so far, the current state, and waits."""

    def __init__(self, kafka_settings: settings_mod.KafkaSettings) -> None:
        super().__init__(kafka_settings)
        self.records: dict[topics.Topic, list[Seen]] = {t: [] for t in FOLLOWED}
        self.open: dict[str, findings.Finding] = {}
        self.actions: dict[str, remediation.RemediationAction] = {}
        self.posture: dict[str, list[tuple[float, float]]] = {}
        self.published: set[str] = set()  # resource keys (cluster/uid) ingest published
        self.undecodable = 0
        self.listeners: list[Listener] = []
        self._changed = asyncio.Condition()
        self._specs = {
            s.topic: s
            for s in topics.catalogue(
                prefix=kafka_settings.topic_prefix, partitions=kafka_settings.partitions
            )
        }

    async def start(self) -> None:
        """Start reading every followed topic from its first record."""
        names = {self._specs[t].name: t for t in FOLLOWED}
        await self._open(
            [tp for t in FOLLOWED for tp in self._partitions(t)],
            lambda consumer: self._read(consumer, names),
            client_id="kposture-demo",
            task_name="demo-observer",
        )

    def _partitions(self, topic: topics.Topic) -> list[aiokafka.TopicPartition]:
        spec = self._specs[topic]
        return [aiokafka.TopicPartition(spec.name, p) for p in range(spec.partitions)]

    async def _read(
        self, consumer: aiokafka.AIOKafkaConsumer, names: dict[str, topics.Topic]
    ) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            seen: list[Seen] = []
            for tp, messages in batches.items():
                topic = names[tp.topic]
                for message in messages:
                    if topic is topics.Topic.RESOURCES:
                        # The key (cluster/uid) says which object ingest published; the
                        # object itself is of no interest here.
                        self.published.add((message.key or b"").decode(errors="replace"))
                        continue
                    if message.value is None:
                        continue  # a tombstone on a compacted topic
                    try:
                        _, model = envelope.decode_record(message.headers or (), message.value)
                    except codec.DecodeError:
                        self.undecodable += 1  # e.g. the remediator's pause/resume control
                        continue
                    seen.append(Seen(topic, model, message.timestamp / 1000))
            seen.sort(key=lambda s: s.at)
            for item in seen:
                self._remember(item)
                for listener in self.listeners:
                    listener(item)
            if batches:
                async with self._changed:
                    self._changed.notify_all()

    async def lag(self, group: str, topic: topics.Topic) -> int:
        """How many records of ``topic`` the consumer group ``group`` has not committed yet."""
        assert self._admin is not None, "start() first"
        assert self._consumer is not None, "start() first"
        partitions = self._partitions(topic)
        committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await self._consumer.end_offsets(partitions)
        behind = 0
        for tp in partitions:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            behind += max(0, ends[tp] - position)
        return behind

    async def idle(
        self,
        *,
        keys: set[str],
        groups: dict[str, topics.Topic],
        quiet_s: float,
        timeout_s: float,
    ) -> str | None:
        """Wait until the pipeline has caught up; None, or what it is still doing at timeout.

        Caught up means: ingest published every resource key in ``keys``, every consumer group
        in ``groups`` committed its topic to the end, and no finding or audit record arrived
        for ``quiet_s``. Silence alone is not enough: a slow evaluator is silent too.
        """
        deadline = time.monotonic() + timeout_s
        waiting = "nothing"
        while time.monotonic() < deadline:
            missing = keys - self.published
            if missing:
                waiting = f"ingest to publish {len(missing)} object(s)"
            else:
                lags = {g: await self.lag(g, t) for g, t in groups.items()}
                behind = {g: n for g, n in lags.items() if n}
                if behind:
                    waiting = ", ".join(f"{g} ({n} records behind)" for g, n in behind.items())
                elif await self.quiet(for_s=quiet_s, timeout_s=0.0):
                    return None
                else:
                    waiting = "findings and audit records to stop arriving"
            await asyncio.sleep(0.25)
        return waiting

    def _remember(self, item: Seen) -> None:
        self.records[item.topic].append(item)
        model = item.model
        if isinstance(model, findings.Finding):
            if model.state in (findings.Transition.OPENED, findings.Transition.UPDATED):
                self.open[model.key] = model
            else:
                self.open.pop(model.key, None)
        elif isinstance(model, posture.PostureSnapshot):
            if model.scope is posture.Scope.CLUSTER:
                self.posture.setdefault(model.cluster, []).append((item.at, model.score))
        elif isinstance(model, remediation.RemediationAction):
            current = self.actions.get(model.action_id)
            if current is None or model.updated_at >= current.updated_at:
                self.actions[model.action_id] = model

    async def first(
        self, topic: topics.Topic, match: Callable[[Seen], bool], *, timeout_s: float
    ) -> Seen | None:
        """The first record of ``topic`` (already read or still to come) that matches, or None."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            log_ = self.records[topic]
            for item in log_[checked:]:
                if match(item):
                    return item
            checked = len(log_)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):  # not wait_for, which can lose a cancel
                        await self._changed.wait()

    async def quiet(self, *, for_s: float, timeout_s: float) -> bool:
        """Wait until no finding or audit record arrived for ``for_s``; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            last = max(
                (
                    self.records[t][-1].at
                    for t in (topics.Topic.FINDINGS, topics.Topic.AUDIT)
                    if self.records[t]
                ),
                default=0.0,
            )
            idle = time.time() - last
            if idle >= for_s:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(for_s - idle, left) + 0.05)

    def pending_approvals(self) -> list[remediation.RemediationAction]:
        """The actions waiting for ``kposture remediation approve`` (``list --pending``)."""
        pending = [
            a for a in self.actions.values() if a.phase is remediation.Phase.PENDING_APPROVAL
        ]
        return sorted(pending, key=lambda a: a.updated_at)

    def audit_events(self) -> list[audit.AuditEvent]:
        """The audit events read so far, in topic order."""
        return [
            s.model
            for s in self.records[topics.Topic.AUDIT]
            if isinstance(s.model, audit.AuditEvent)
        ]

    def score(self, cluster: str) -> float | None:
        """The latest posture score of ``cluster``."""
        history = self.posture.get(cluster)
        return history[-1][1] if history else None


def about(model: Any, *, cluster: str, uid: str) -> bool:
    """Whether a finding, audit event or remediation action concerns the object ``uid``.

    A fix can be decided from a finding on the object itself or on one it owns (a ReplicaSet,
    a Pod) and it writes the owner, so an action matches by the object it writes as well as by
    the finding it came from.
    """
    if getattr(model, "cluster", None) != cluster:
        return False
    if isinstance(model, findings.Finding):
        return model.ref.uid == uid
    ref = getattr(model, "ref", None)
    key = getattr(model, "finding_key", "")
    return (ref is not None and ref.uid == uid) or key.startswith(f"{cluster}/{uid}/")
