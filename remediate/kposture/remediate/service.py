"""The remediate service: consume findings, act on them, commit after the audit is published.

Start-up order matters for safety: the ledger is read to its end (so earlier decisions and the
pause state are known) and the audit chain's tip is found before the first finding is read.
Then four tasks run in one ``TaskGroup``: the ledger reader (idempotency and kill switch), the
findings consumer, the approvals worker and the population counter that feeds the breaker's
touch percentage. Findings are decided concurrently (``max_concurrency``), in order per object,
and a finding that has to wait (backoff, canary, pause) is parked rather than awaited, so it
never delays unrelated objects (``consuming``, ``dispatching``). Offsets are committed per
partition only up to the oldest finding not yet decided and audited, so a crash redelivers
(and the ledger turns the redelivery into a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiokafka

from kposture.remediate import (
    applying,
    auditing,
    consuming,
    dispatching,
    fixes,
    recording,
    remediating,
    throttling,
)
from kposture.runtime import health, kafka, kube
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, deadletter, envelope, findings, remediation, topics

log = logging.getLogger(__name__)

SERVICE = "remediate"
_POPULATION_INTERVAL_S = 60.0
_COUNTED = [
    common.ObjectRef("apps/v1", kind, "", "") for kind in ("Deployment", "StatefulSet", "DaemonSet")
]
"""The kinds whose count is a cluster's population for the breaker's touch percentage."""


def fixable_check(finding: findings.Finding) -> bool:
    """Whether the finding could lead to a decision (the rest are not even audited)."""
    return finding.remediation.available or fixes.lookup(finding.check) is not None


def decode_finding(headers: Any, value: bytes | None) -> findings.Finding:
    """The finding in a record; :class:`codec.DecodeError` when the record is not one."""
    _, model = envelope.decode_record(headers, value)
    if not isinstance(model, findings.Finding):
        raise codec.DecodeError(f"not a finding: {type(model).__name__}")
    return model


class RemediateService:
    """The running service for one settings tree."""

    def __init__(self, settings: settings_mod.Settings) -> None:
        self.settings = settings
        self.readiness = health.Readiness()
        self.throttle = throttling.Throttle(settings.remediate)
        self.slots = dispatching.Slots(settings.remediate.max_concurrency)
        self.approvals: asyncio.Queue[remediation.RemediationAction] = asyncio.Queue()
        self.remediator: remediating.Remediator | None = None
        self.handled = 0

    def _on_action(self, action: remediation.RemediationAction) -> None:
        if action.phase is remediation.Phase.APPROVED:
            self.approvals.put_nowait(action)

    def _on_control(self, control: recording.Control) -> None:
        if not control.paused:
            self.throttle.breaker.reset()  # resuming is also how a human closes the breaker
        log.warning(
            "remediation %s by %s: %s",
            "paused" if control.paused else "resumed",
            control.actor,
            control.reason,
        )

    @contextlib.asynccontextmanager
    async def _clusters(self) -> AsyncIterator[dict[str, applying.KubeClient]]:
        clients: dict[str, Any] = {}
        try:
            for cluster in self.settings.clusters:
                clients[cluster.name] = await kube.api_client(cluster)
            yield {name: applying.KubeClient(api) for name, api in clients.items()}
        finally:
            for api in clients.values():
                await api.close()

    async def run(self) -> None:
        """Run until cancelled."""
        kafka_settings = self.settings.kafka
        producer = kafka.producer(kafka_settings, client_id="kposture-remediate")
        await producer.start()
        ledger = recording.KafkaLedger(
            kafka_settings,
            producer,
            kill_switch=self.throttle.kill_switch,
            on_action=self._on_action,
            on_control=self._on_control,
        )
        consumer = kafka.consumer(
            kafka_settings,
            kafka.topic_name(kafka_settings, topics.Topic.FINDINGS),
            group_id=self.settings.remediate.group_id,
            client_id="kposture-remediate",
        )
        try:
            async with self._clusters() as clusters:
                await ledger.start()
                auditor = await auditing.KafkaAuditor.resume(kafka_settings, producer)
                self.remediator = remediating.Remediator(
                    self.settings.remediate,
                    clusters=clusters,
                    ledger=ledger,
                    auditor=auditor,
                    throttle=self.throttle,
                    canary_timeout_s=self.settings.remediate.canary_timeout_s,
                    canary_soak_s=self.settings.remediate.canary_soak_s,
                    take_over_imperative=self.settings.remediate.take_over_imperative_fields,
                    lend_slot=self.slots.lent,
                )
                await consumer.start()
                self.readiness.report("kafka", ok=True, detail="ledger and audit chain loaded")
                async with asyncio.TaskGroup() as group:
                    group.create_task(ledger.run(), name="remediate-ledger")
                    group.create_task(self._consume(consumer, producer), name="remediate-findings")
                    group.create_task(self._approve(), name="remediate-approvals")
                    group.create_task(self._count(clusters), name="remediate-population")
        finally:
            await consumer.stop()
            await ledger.stop()
            await producer.stop()

    async def _consume(
        self, consumer: aiokafka.AIOKafkaConsumer, producer: aiokafka.AIOKafkaProducer
    ) -> None:
        loop = consuming.FindingsLoop(
            consumer,
            decide=self._decide,
            decode=lambda message: decode_finding(message.headers or (), message.value),
            wanted=fixable_check,
            dead_letter=functools.partial(self._dead_letter, producer),
            slots=self.slots,
            fast=self._decide_fast,
        )
        await loop.run()

    async def _decide_fast(self, finding: findings.Finding) -> bool:
        """Decide one finding without a slot when that is cheap (observe mode); else False."""
        assert self.remediator is not None
        decided = await self.remediator.decide_fast(finding)
        if decided:
            self.handled += 1
            log.debug("finding %s: decided without a cluster read", finding.key)
        return decided

    async def _decide(self, finding: findings.Finding) -> None:
        """Decide one finding; parking (``WouldWaitError``) propagates to the dispatcher."""
        assert self.remediator is not None
        phase = await self.remediator.handle(finding, park=True)
        self.handled += 1
        log.info("finding %s: %s", finding.key, phase or "ignored")

    async def _dead_letter(
        self, producer: aiokafka.AIOKafkaProducer, message: Any, reason: str
    ) -> None:
        letter = deadletter.DeadLetter(
            reason=reason,
            service=SERVICE,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=kafka.headers_dict(message.headers),
            failed_at=common.utcnow(),
        )
        event = envelope.wrap(
            letter, event_type=codec.DEADLETTER_TYPE, source="kposture://remediate"
        )
        dlq = kafka.topic_name(self.settings.kafka, topics.Topic.DLQ)
        key = (message.key or b"").decode(errors="replace")
        await kafka.publish(producer, dlq, key=key, event=event)

    async def _approve(self) -> None:
        assert self.remediator is not None
        ledger = self.remediator.ledger.ledger
        # Each approval in its own task: one waiting for its object's backoff must not hold
        # up the others (the remediator's per-object lock still orders it with findings).
        approving: set[str] = set()
        async with asyncio.TaskGroup() as group:
            while True:
                action = await self.approvals.get()
                latest = ledger.find(action.action_id)
                if latest is None or latest.phase is not remediation.Phase.APPROVED:
                    continue  # already carried out (a record read back while catching up)
                if action.cluster not in self.remediator.clusters:
                    continue
                if action.action_id in approving:
                    continue  # the same approval read twice while the first is carried out
                approving.add(action.action_id)
                approver = action.rationale.removeprefix("approved by ").strip() or "unknown"
                group.create_task(
                    self._approve_one(latest, approver=approver, approving=approving),
                    name=f"remediate-approve-{action.action_id}",
                )

    async def _approve_one(
        self, action: remediation.RemediationAction, *, approver: str, approving: set[str]
    ) -> None:
        assert self.remediator is not None
        try:
            phase = await self.remediator.approve(action, approver=approver)
        finally:
            approving.discard(action.action_id)
        log.info("approved action %s: %s", action.action_id, phase)

    async def _count(self, clusters: dict[str, applying.KubeClient]) -> None:
        while True:
            for name, client in clusters.items():
                try:
                    population = await client.count(_COUNTED)
                except Exception as exc:  # noqa: BLE001 - a cluster that is down must not stop us
                    log.warning("cannot count the objects of %s: %s", name, exc)
                    continue
                self.throttle.breaker.population(name, population)
            await asyncio.sleep(_POPULATION_INTERVAL_S)


async def main(settings: settings_mod.Settings) -> None:
    """Run the service, with its health endpoint when a port is configured."""
    service = RemediateService(settings)
    http = settings.remediate.http
    runner = None
    if http.port:
        runner = await health.serve(
            health.make_app(service.readiness), host=http.host, port=http.port
        )
    try:
        await service.run()
    finally:
        if runner is not None:
            await runner.cleanup()
