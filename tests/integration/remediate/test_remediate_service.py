"""The service end to end on the real broker and apiserver; a crash between apply and audit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiokafka
import pytest
from kubernetes_asyncio import client
from remediate_it_support import audit_records, create_imperatively, deployment, finding_for, stack

from kposture.remediate import applying, auditing, planning, service
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, codec, envelope, findings, remediation, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def _publish_finding(settings: settings_mod.Settings, finding: findings.Finding) -> None:
    producer = kafka.producer(settings.kafka, client_id="it-evaluate")
    await producer.start()
    try:
        event = envelope.wrap(
            finding,
            event_type=codec.finding_type(finding.state),
            source=f"kposture://{finding.cluster}/evaluate",
            subject=finding.ref.subject,
        )
        topic = kafka.topic_name(settings.kafka, topics.Topic.FINDINGS)
        await kafka.publish(producer, topic, key=finding.key, event=event)
    finally:
        await producer.stop()


async def _committed(settings: settings_mod.Settings) -> int:
    consumer = kafka.consumer(
        settings.kafka, group_id=settings.remediate.group_id, client_id="it-offsets"
    )
    await consumer.start()
    try:
        topic = kafka.topic_name(settings.kafka, topics.Topic.FINDINGS)
        total = 0
        for p in range(settings.kafka.partitions):
            offset = await consumer.committed(aiokafka.TopicPartition(topic, p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def test_the_service_fixes_a_published_finding_and_commits_after_the_audit(
    api: client.ApiClient, namespace: str, settings: settings_mod.Settings
) -> None:
    """A finding on the topic: verified fix, audit published, then the offset committed."""
    await kafka.create_topics(settings.kafka)
    obj = await create_imperatively(
        api, deployment("svc", namespace, security={"privileged": True})
    )
    running = service.RemediateService(settings)
    task = asyncio.create_task(running.run())
    try:
        await _publish_finding(settings, finding_for(obj, cluster=settings.clusters[0].name))
        for _ in range(600):
            if await _committed(settings) >= 1:
                break
            await asyncio.sleep(0.2)
        assert await _committed(settings) == 1
        actions = [r.event.action for r in await audit_records(settings) if r.event]
        assert actions[-1] is audit.Action.VERIFIED
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Crash(BaseException):
    """The process dies here (a BaseException, so no handler of ours can swallow it)."""


class _CrashBeforeAuditingTheApply:
    """An audit sink that dies when the apply is about to be audited: the write has landed."""

    def __init__(self, real: auditing.AuditSink) -> None:
        self.real = real

    async def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        if event.action is audit.Action.APPLIED:
            raise _Crash
        return await self.real.record(event)


async def test_a_crash_between_apply_and_audit_writes_once_and_keeps_the_chain(
    api: client.ApiClient, namespace: str, settings: settings_mod.Settings
) -> None:
    """Die after the write, restart from the topics: one write in total, a no-op, chain intact."""
    await kafka.create_topics(settings.kafka)
    obj = await create_imperatively(
        api, deployment("crash", namespace, security={"privileged": True})
    )
    finding = finding_for(obj, cluster=settings.clusters[0].name)
    async with stack(settings) as first:
        first.remediator.journal.auditor = _CrashBeforeAuditingTheApply(first.auditor)
        with pytest.raises(_Crash):
            await first.remediator.handle(finding)
    written = await _live(api, obj)
    assert written["spec"]["template"]["spec"]["containers"][0]["securityContext"] == {
        "privileged": False
    }
    async with stack(settings) as restarted:
        assert await restarted.remediator.handle(finding) is remediation.Phase.NO_OP
    after = await _live(api, obj)
    # Status updates move resourceVersion; the spec's generation counts our writes.
    assert after["metadata"]["generation"] == written["metadata"]["generation"]
    assert after["metadata"]["generation"] == obj["metadata"]["generation"] + 1
    records = await audit_records(settings)
    assert auditing.verify(records) is None
    actions = [r.event.action for r in records if r.event]
    assert actions == [audit.Action.PLANNED, audit.Action.DRY_RUN, audit.Action.NO_OP]


async def _live(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    found = await applying.KubeClient(api).get(planning.ref_of(obj))
    assert found is not None
    return found
