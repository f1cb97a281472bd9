"""Following the policy: the compacted ``baselines`` topic, read in full by every worker.

Every worker reads the whole topic with a plain consumer (no consumer group: a
single-partition topic would otherwise reach only one worker). ``start`` catches up to the end
of the topic before the worker evaluates anything, so the first findings already come from the
published policy; ``follow`` then applies each new record, rebuilds the policy and reports it.
A record that is not a valid policy document is dead-lettered and the previous policy stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.structs import TopicPartition

from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.stream import processing
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, policy, topics

log = logging.getLogger(__name__)


class PolicyFollower:
    """Keeps a ``PolicyStore`` up to date with the baselines topic."""

    def __init__(
        self,
        settings: settings_mod.Settings,
        store: policy_store.PolicyStore,
        *,
        clock: processing.Clock,
        readiness: health.Readiness,
        dead_letter: Callable[[processing.Output], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.readiness = readiness
        self.dead_letter = dead_letter
        self._consumer: Any = None

    async def start(self) -> policy_store.PolicySet:
        """Read the topic to its end; return the policy in force then."""
        name = kafka.topic_name(self.settings.kafka, topics.Topic.BASELINES)
        consumer = kafka.consumer(
            self.settings.kafka, group_id=None, client_id=f"{self.settings.evaluate.app_id}-policy"
        )
        await consumer.start()
        self._consumer = consumer
        # One partition, as the catalogue lays the topic out: one order of policy for all.
        await kafka.read_to_end(consumer, [TopicPartition(name, 0)], self._apply)
        built = self.store.build()
        self.readiness.report("policy", ok=True, detail=describe(built))
        return built

    async def follow(self, on_change: Callable[[policy_store.PolicySet], None]) -> None:
        """Apply new records until cancelled; call ``on_change`` with each new policy."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            records = [r for records in batch.values() for r in records]
            if not records or not self._apply(records):
                continue
            try:
                built = self.store.build()
            except policy_store.PolicyError as exc:
                log.error("policy not applied: %s", exc)  # noqa: TRY400 - the reason is the news
                self.readiness.report("policy", ok=False, detail=str(exc), critical=False)
                continue
            self.readiness.report("policy", ok=True, detail=describe(built))
            on_change(built)

    async def stop(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()

    def _apply(self, records: Iterable[Any]) -> bool:
        changed = False
        for record in records:
            key = record.key.decode() if record.key else ""
            try:
                document = None
                if record.value is not None:
                    document = _decode_policy(record.headers or (), record.value)
                self.store.apply(key, document)
                changed = True
            except (codec.DecodeError, policy_store.PolicyError) as exc:
                log.warning("policy record rejected: %s", exc, extra={"key": key})
                self.dead_letter(
                    processing.dead_letter(
                        str(exc),
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=dict(record.headers or ()),
                        now=self.clock(),
                    )
                )
        return changed


def describe(policy_set: policy_store.PolicySet) -> str:
    """The policy in one line, for readiness: baselines at their versions, exceptions."""
    versions = ", ".join(f"{n}@{v}" for n, v in sorted(policy_set.versions.items()))
    return f"{versions or 'no baselines'}; {len(policy_set.waivers)} exception(s)"


def _decode_policy(headers: Iterable[tuple[str, bytes]], value: bytes) -> policy.PolicyDocument:
    _, document = envelope.decode_record(headers, value)
    if not isinstance(document, policy.PolicyDocument):
        raise codec.DecodeError(f"not a policy document: {type(document).__name__}")
    return document
