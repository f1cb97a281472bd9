"""Helpers of the remediate integration tests: settings, the wired stack, findings, objects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client

from kposture.cli.devenv import environment
from kposture.remediate import applying, auditing, planning, recording, remediating, throttling
from kposture.runtime import kafka, kube
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, findings, topics


def make_settings(env: environment.Environment, prefix: str) -> settings_mod.Settings:
    """Settings on the environment with the topic prefix ``prefix`` and the first cluster."""
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=env.kafka_bootstrap, topic_prefix=prefix, partitions=3
        ),
        clusters=[
            settings_mod.ClusterSettings(
                name=env.contexts[0], kubeconfig=str(env.kubeconfig), context=env.contexts[0]
            )
        ],
        remediate=settings_mod.RemediateSettings(patches_per_second=50.0, burst=50),
    )


@dataclasses.dataclass
class Stack:
    """A remediator with its real ports, and the handles a test inspects."""

    settings: settings_mod.Settings
    remediator: remediating.Remediator
    ledger: recording.KafkaLedger
    auditor: auditing.KafkaAuditor
    kube: applying.KubeClient
    cluster: str


@contextlib.asynccontextmanager
async def stack(settings: settings_mod.Settings) -> AsyncIterator[Stack]:
    """Create the topics, start the ledger reader and the auditor, and yield the remediator."""
    await kafka.create_topics(settings.kafka)
    producer = kafka.producer(settings.kafka, client_id="it-remediate")
    await producer.start()
    api = await kube.api_client(settings.clusters[0])
    throttle = throttling.Throttle(settings.remediate)
    ledger = recording.KafkaLedger(settings.kafka, producer, kill_switch=throttle.kill_switch)
    reader: asyncio.Task[None] | None = None
    try:
        await ledger.start()
        reader = asyncio.create_task(ledger.run(), name="it-ledger")
        auditor = await auditing.KafkaAuditor.resume(settings.kafka, producer)
        kube_client = applying.KubeClient(api)
        name = settings.clusters[0].name
        remediator = remediating.Remediator(
            settings.remediate,
            clusters={name: kube_client},
            ledger=ledger,
            auditor=auditor,
            throttle=throttle,
            canary_timeout_s=120.0,
            canary_soak_s=1.0,
        )
        for _ in range(50):  # the reader must be current before writes are admitted
            if throttle.kill_switch.blocked(time.monotonic()) is None:
                break
            await asyncio.sleep(0.1)
        yield Stack(settings, remediator, ledger, auditor, kube_client, name)
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await ledger.stop()
        await producer.stop()
        await api.close()


def deployment(name: str, namespace: str, *, security: dict[str, Any]) -> dict[str, Any]:
    """A one-replica Deployment whose container ``app`` has ``security`` as securityContext."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "securityContext": security,
                        }
                    ]
                },
            },
        },
    }


async def create(api: client.ApiClient, obj: dict[str, Any], *, manager: str) -> dict[str, Any]:
    """Create ``obj`` with server-side apply as ``manager``; the live object."""
    ref = planning.ref_of(obj)
    result = await api.call_api(
        applying.resource_path(ref),
        "PATCH",
        query_params=[("fieldManager", manager)],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=obj,
        response_types_map={200: "object", 201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    return dict(result)


async def create_imperatively(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj`` with a plain POST, as ``kubectl create`` does (an Update manager)."""
    ref = planning.ref_of(obj)
    result = await api.call_api(
        applying.resource_path(ref, name=False),
        "POST",
        query_params=[("fieldManager", "kubectl-create")],
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=obj,
        response_types_map={201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    return dict(result)


def finding_for(
    obj: dict[str, Any], *, cluster: str, check: str = "privileged"
) -> findings.Finding:
    """A failing, opened finding of ``check`` about ``obj`` as it is now."""
    now = common.utcnow()
    return findings.Finding(
        cluster=cluster,
        ref=planning.ref_of(obj),
        baseline="pss-baseline",
        baseline_version="v1.37",
        check=check,
        title=check,
        controls=[f"pss:baseline/{check}"],
        severity=common.Severity.CRITICAL,
        result=common.Result.FAIL,
        state=findings.Transition.OPENED,
        message="privileged container",
        path="spec.template.spec.containers[0].securityContext.privileged",
        first_seen=now,
        observed_at=now,
        detected_at=now,
        remediation=findings.Remediation(available=True, risk=findings.Risk.DISRUPTIVE),
    )


async def audit_records(settings: settings_mod.Settings) -> list[auditing.Record]:
    """Every record of the test's audit topic."""
    return await auditing.read_all(
        settings.kafka, kafka.topic_name(settings.kafka, topics.Topic.AUDIT)
    )


async def append_raw(settings: settings_mod.Settings, event: Any) -> None:
    """Append an audit event as-is (no sealing): what a tamperer would do."""
    producer = kafka.producer(settings.kafka, client_id="it-tamper")
    await producer.start()
    try:
        message = envelope.wrap(event, event_type=codec.AUDIT_TYPE, source="kposture://x/tamper")
        topic = kafka.topic_name(settings.kafka, topics.Topic.AUDIT)
        await kafka.publish(producer, topic, key="x", event=message)
    finally:
        await producer.stop()
