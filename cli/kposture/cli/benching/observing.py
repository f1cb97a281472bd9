"""Reading the run's topics back: resources (for ingest), findings and audit (for latencies).

One consumer without a group reads the three topics from their beginning (each bench run has
its own topic prefix, so everything there is this run's). It keeps only what the report
needs, cheaply: resource records are counted by their key and CloudEvent type header without
decoding the payload; of the findings only ``opened`` ones are decoded; audit events are
decoded in full (there are few).

Times are the records' Kafka timestamps (set when the service produced them, wall-clock
milliseconds of this host, the same clock as the write times), plus the moment this consumer
saw each record, which adds the consumer's own polling delay.

The evaluate service's progress is read from its consumer group's committed offsets: it
commits after processing, so committed minus end offsets is its lag, and the difference of
committed offsets between two moments is the number of events it processed in between.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import Any

import aiokafka

from kposture.cli import localops
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, codec, envelope, findings, resources, topics

_TYPE_HEADER = "ce_type"
_OPENED = codec.finding_type(findings.Transition.OPENED).encode()
_DELETED = codec.resource_type(resources.Change.DELETED).encode()
_POLL_MS = 100


@dataclasses.dataclass(frozen=True)
class Opened:
    """An ``opened`` finding: its check, the object version it judged, and when it arrived."""

    check: str
    resource_version: int
    at: float  # the record's timestamp (epoch seconds)
    seen_at: float  # when this consumer read it (epoch seconds)


@dataclasses.dataclass(frozen=True)
class Audited:
    """An audit event about one object: what was done, how it went, and when it arrived."""

    action: audit.Action
    outcome: audit.Outcome
    at: float


class Observer(localops.TopicReader):
    """What the pipeline has published so far, indexed for the bench's questions."""

    def __init__(
        self,
        kafka_settings: settings_mod.KafkaSettings,
        *,
        evaluate_group: str,
        remediate_group: str,
    ) -> None:
        super().__init__(kafka_settings)
        specs = {
            s.topic: s
            for s in topics.catalogue(
                prefix=kafka_settings.topic_prefix, partitions=kafka_settings.partitions
            )
        }
        self._names = {
            specs[t].name: t
            for t in (topics.Topic.RESOURCES, topics.Topic.FINDINGS, topics.Topic.AUDIT)
        }
        # Each consumer group the bench follows, with the partitions it consumes.
        self._groups = {
            "evaluate": (evaluate_group, _partitions(specs[topics.Topic.RESOURCES])),
            "remediate": (remediate_group, _partitions(specs[topics.Topic.FINDINGS])),
        }
        self._partitions = [
            aiokafka.TopicPartition(name, p)
            for name, topic in self._names.items()
            for p in range(specs[topic].partitions)
        ]
        # Resource keys whose records are decoded to note when each version arrived (the
        # bench's Deployments), so detection latency splits into ingest and evaluate stages.
        self.follow: set[str] = set()
        self.versions: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        self.first_seen: dict[str, float] = {}  # resource key -> first record timestamp
        self.live: set[str] = set()  # resource keys whose latest record is not a deletion
        self.resource_records = 0
        self.opened: dict[tuple[str, str], list[Opened]] = collections.defaultdict(list)
        self.audited: dict[tuple[str, str], list[Audited]] = collections.defaultdict(list)
        self.findings_opened = 0
        self.undecodable = 0

    async def start(self) -> None:
        """Start reading every followed topic from its first record."""
        await self._open(
            self._partitions, self._read, client_id="kposture-bench", task_name="bench-observer"
        )

    async def _read(self, consumer: aiokafka.AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            seen_at = time.time()
            for tp, messages in batches.items():
                topic = self._names[tp.topic]
                for message in messages:
                    self._remember(topic, message, seen_at)

    def _remember(
        self, topic: topics.Topic, message: aiokafka.ConsumerRecord, seen_at: float
    ) -> None:
        at = message.timestamp / 1000
        headers = dict(message.headers or ())
        if topic is topics.Topic.RESOURCES:
            key = (message.key or b"").decode()
            self.resource_records += 1
            self.first_seen.setdefault(key, at)
            if message.value is None or headers.get(_TYPE_HEADER) == _DELETED:
                self.live.discard(key)
            else:
                self.live.add(key)
                if key in self.follow:
                    self._note_version(key, message, at)
            return
        if message.value is None:
            return
        if topic is topics.Topic.FINDINGS and headers.get(_TYPE_HEADER) != _OPENED:
            return  # updated, resolved, waived: the bench times openings only
        try:
            _, model = envelope.decode_record(message.headers or (), message.value)
        except codec.DecodeError:
            self.undecodable += 1
            return
        if isinstance(model, findings.Finding):
            self.findings_opened += 1
            rv = int(model.ref.resource_version) if model.ref.resource_version.isdigit() else 0
            opened = Opened(model.check, rv, at, seen_at)
            self.opened[(model.cluster, model.ref.uid)].append(opened)
        elif isinstance(model, audit.AuditEvent):
            # Indexed by the object written and by the object of the finding (``cluster/uid/
            # check``): a fix decided on a Pod's finding writes its Deployment's template.
            entry = Audited(model.action, model.outcome, at)
            self.audited[(model.cluster, model.ref.uid)].append(entry)
            parts = model.finding_key.split("/")
            if len(parts) >= 3 and parts[1] != model.ref.uid:
                self.audited[(model.cluster, parts[1])].append(entry)

    def _note_version(
        self, key: str, message: aiokafka.ConsumerRecord[Any, Any], at: float
    ) -> None:
        try:
            _, model = envelope.decode_record(message.headers or (), message.value)
        except codec.DecodeError:
            self.undecodable += 1
            return
        if isinstance(model, resources.ResourceEvent) and model.ref.resource_version.isdigit():
            self.versions[key].append((int(model.ref.resource_version), at))

    def first_version(self, key: str, *, since_rv: int) -> float | None:
        """When the first record of ``key`` at or after ``since_rv`` reached the topic."""
        return min((at for rv, at in self.versions.get(key, ()) if rv >= since_rv), default=None)

    def first_opened(
        self, cluster: str, uid: str, *, checks: frozenset[str], since_rv: int
    ) -> Opened | None:
        """The earliest opening of one of ``checks`` on the object at or after ``since_rv``."""
        found = [
            o
            for o in self.opened.get((cluster, uid), ())
            if o.check in checks and o.resource_version >= since_rv
        ]
        return min(found, key=lambda o: o.at, default=None)

    def first_audited(
        self, cluster: str, uid: str, *, action: audit.Action, since: float, success: bool = True
    ) -> Audited | None:
        """The earliest ``action`` (successful, unless not asked) on the object since ``since``."""
        found = [
            a
            for a in self.audited.get((cluster, uid), ())
            if a.action is action
            and a.at >= since
            and (not success or a.outcome is audit.Outcome.SUCCESS)
        ]
        return min(found, key=lambda a: a.at, default=None)

    async def end_offsets(self, service: str = "evaluate") -> int:
        """How many records the input topic of ``service`` holds (the sum of its end offsets)."""
        assert self._consumer is not None, "start() first"
        ends = await self._consumer.end_offsets(self._groups[service][1])
        return sum(ends.values())

    async def processed(self, service: str = "evaluate") -> int:
        """How many input records ``service`` has processed and committed (all partitions).

        ``evaluate`` consumes the resources topic, ``remediate`` the findings topic.
        """
        assert self._admin is not None, "start() first"
        group, partitions = self._groups[service]
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        return sum(max(meta.offset, 0) for meta in offsets.values())

    async def lag(self, service: str = "evaluate") -> int:
        """Records on the input topic of ``service`` that it has not committed yet."""
        return max(0, await self.end_offsets(service) - await self.processed(service))

    async def wait_caught_up(
        self, service: str = "evaluate", *, timeout_s: float, poll_s: float = 0.5
    ) -> bool:
        """Wait until ``service`` has committed every input record published so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if await self.lag(service) == 0:
                return True
            await asyncio.sleep(poll_s)
        return False


def _partitions(spec: topics.TopicSpec) -> list[aiokafka.TopicPartition]:
    return [aiokafka.TopicPartition(spec.name, p) for p in range(spec.partitions)]
