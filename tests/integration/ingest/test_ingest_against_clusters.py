"""Ingest against the real apiservers and broker: events, order, suppression, no secret leaks,
and one unreachable cluster not stopping another."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from ingest_it_support import (
    Event,
    Kube,
    TopicTail,
    eventually,
    make_settings,
    of_namespace,
    running_ingest,
)

from kposture.cli.devenv import environment, processes
from kposture.ingest import kubeapi, normalising
from kposture.runtime import logs
from kposture.runtime import settings as settings_mod

pytestmark = pytest.mark.integration


def _changes(events: list[Event], key: str) -> list[str | None]:
    return [e.type.split(".")[-2] if e.type else None for e in events if e.key == key]


async def test_changes_on_two_clusters_reach_the_topic_with_types_keys_and_order(
    env: environment.Environment, kubes: list[Kube], namespace: str
) -> None:
    """Create, two updates and a delete on each cluster give added, modified, modified,
    deleted and a tombstone, under the key <cluster>/<uid>, in that order."""
    settings = make_settings(env)
    async with (
        running_ingest(settings, ready=["cluster/c1", "cluster/c2"]),
        TopicTail(settings) as tail,
    ):
        keys = []
        for index, kube in enumerate(kubes, start=1):
            path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
            created = await kube.create(path, {"metadata": {"name": "robot"}})
            for step in ("1", "2"):
                await kube.merge(f"{path}/robot", {"metadata": {"labels": {"step": step}}})
            await kube.delete(f"{path}/robot")
            keys.append(f"c{index}/{created['metadata']['uid']}")

        def complete(events: list[Event]) -> bool:
            return all(len(_changes(events, key)) >= 5 for key in keys)

        events = await tail.until(complete, within_s=60)
    for key in keys:
        assert _changes(events, key) == ["added", "modified", "modified", "deleted", None]
        mine = [e for e in events if e.key == key and e.event is not None]
        assert {e.event.cluster for e in mine if e.event} == {key.split("/")[0]}
        labels = [
            (e.event.object["metadata"].get("labels") or {}).get("step") for e in mine if e.event
        ]
        assert labels == [None, "1", "2", "2"]
        assert all(e.event and e.event.ref.name == "robot" for e in mine)


async def test_status_only_update_publishes_nothing(
    env: environment.Environment, kubes: list[Kube], namespace: str
) -> None:
    """A write to a Service's status alone gives no event; the next label change does."""
    settings = make_settings(env)
    kube = kubes[0]
    path = f"/api/v1/namespaces/{namespace}/services"
    async with running_ingest(settings, ready=["cluster/c1"]), TopicTail(settings) as tail:
        created = await kube.create(
            path,
            {
                "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            },
        )
        key = f"c1/{created['metadata']['uid']}"
        await tail.until(lambda events: len(_changes(events, key)) == 1)
        status = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
        updated = await kube.merge(f"{path}/web/status", status)
        assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
        await kube.merge(f"{path}/web", {"metadata": {"labels": {"marker": "after-status"}}})
        events = await tail.until(lambda events: len(_changes(events, key)) >= 2)
    assert _changes(events, key) == ["added", "modified"]
    last = [e for e in events if e.key == key][-1].event
    assert last is not None
    assert last.object["metadata"]["labels"] == {"marker": "after-status"}


async def test_secret_values_appear_nowhere_on_the_topic_or_in_the_logs(
    env: environment.Environment,
    kubes: list[Kube],
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Canaries planted in a Secret's data, stringData and last-applied annotation, and in
    Pod and Deployment env values, never reach Kafka or any log record."""
    caplog.set_level(logging.DEBUG)
    canary = f"kp-canary-{uuid.uuid4().hex}"
    planted = [f"{canary}-data", f"{canary}-string", f"{canary}-applied", f"{canary}-env"]
    forbidden = [canary.encode(), *(base64.b64encode(p.encode()) for p in planted)]
    settings = make_settings(env)
    kube = kubes[0]
    ns_path = f"/api/v1/namespaces/{namespace}"
    applied = {"apiVersion": "v1", "kind": "Secret", "stringData": {"k": planted[2]}}
    container = {
        "name": "app",
        "image": "nginx",
        "env": [{"name": "PASSWORD", "value": planted[3]}],
    }
    async with running_ingest(settings, ready=["cluster/c1"]), TopicTail(settings) as tail:
        await kube.create(
            f"{ns_path}/secrets",
            {
                "metadata": {
                    "name": "db",
                    "annotations": {normalising.LAST_APPLIED: json.dumps(applied)},
                },
                "data": {"password": base64.b64encode(planted[0].encode()).decode()},
                "stringData": {"token": planted[1]},
            },
        )
        await kube.create(
            f"{ns_path}/pods", {"metadata": {"name": "app"}, "spec": {"containers": [container]}}
        )
        await kube.create(
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [container]},
                    },
                },
            },
        )
        # A change of the data alone is not a change we publish (the data is never carried).
        await kube.merge(f"{ns_path}/secrets/db", {"stringData": {"token": f"{planted[1]}-2"}})

        def seen(events: list[Event]) -> bool:
            kinds = {e.event.ref.kind for e in of_namespace(events, namespace) if e.event}
            pods = {
                e.name
                for e in of_namespace(events, namespace)
                if e.event and e.event.ref.kind == "Pod"
            }
            return {"Secret", "Pod", "Deployment"} <= kinds and len(pods) >= 2

        events = await tail.until(seen, within_s=90)
    for record in tail.records:
        blob = b"".join([record.key or b"", record.value or b"", *(v for _, v in record.headers)])
        for value in forbidden:
            assert value not in blob, f"a canary leaked in the record of {record.key!r}"
    secret = next(
        e.event for e in of_namespace(events, namespace) if e.event and e.event.ref.kind == "Secret"
    )
    assert "data" not in secret.object
    assert "stringData" not in secret.object
    assert normalising.LAST_APPLIED not in secret.object["metadata"].get("annotations", {})
    pod = next(
        e.event for e in of_namespace(events, namespace) if e.event and e.event.ref.name == "app"
    )
    assert pod.object["spec"]["containers"][0]["env"][0]["value"] == normalising.REDACTED
    formatter = logs.JsonFormatter()
    assert caplog.records, "nothing was logged at all: the log capture is not working"
    for log_record in caplog.records:
        line = formatter.format(log_record)
        assert canary not in line, f"a canary leaked in a log record of {log_record.name}"


async def test_an_unreachable_cluster_does_not_stop_the_others(
    env: environment.Environment, kubes: list[Kube], namespace: str, tmp_path: Path
) -> None:
    """With a second cluster at a closed port, the first cluster's events still flow and the
    second shows as unreachable in the readiness details."""
    closed_port = processes.free_port()
    bogus = tmp_path / "bogus.kubeconfig"
    bogus.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "bogus",
                        "cluster": {
                            "server": f"https://127.0.0.1:{closed_port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "bogus", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "bogus", "context": {"cluster": "bogus", "user": "bogus"}}],
                "current-context": "bogus",
            }
        )
    )
    clusters = [
        settings_mod.ClusterSettings(
            name="c1", kubeconfig=str(env.kubeconfig), context=env.contexts[0]
        ),
        settings_mod.ClusterSettings(name="bogus", kubeconfig=str(bogus), context="bogus"),
    ]
    port = processes.free_port()
    settings = make_settings(env, clusters=clusters, http=settings_mod.HttpSettings(port=port))
    async with (
        running_ingest(settings, ready=["cluster/c1"]) as readiness,
        TopicTail(settings) as tail,
    ):
        created = await kubes[0].create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "flows"}}
        )
        key = f"c1/{created['metadata']['uid']}"
        await tail.until(lambda events: _changes(events, key) == ["added"])
        await eventually(
            lambda: readiness.details().get("cluster/bogus", {}).get("detail") == "unreachable",
            within_s=30,
        )
        checks = readiness.details()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                readyz = await response.json()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics_text = await response.text()
    assert readyz["checks"]["cluster/bogus"]["detail"] == "unreachable"
    assert 'kposture_ingest_cluster_up{cluster="bogus"} 0.0' in metrics_text
    assert 'kposture_ingest_cluster_up{cluster="c1"} 1.0' in metrics_text
    assert 'kposture_ingest_kinds_skipped{cluster="c1",kind="Widget"} 1.0' in metrics_text
    assert checks["cluster/c1"]["ok"] is True
    assert checks["cluster/bogus"]["ok"] is False
    assert readiness.ready()  # a broken cluster is a non-critical check


async def test_the_adapter_receives_secrets_and_configmaps_without_values(
    env: environment.Environment, kubes: list[Kube], namespace: str
) -> None:
    """Lists and watches of Secrets and ConfigMaps come back from the apiserver as metadata
    only: the raw bytes the adapter reads hold no value, yet the items keep their real kind."""
    canary = f"kp-canary-{uuid.uuid4().hex}"
    ns_path = f"/api/v1/namespaces/{namespace}"
    await kubes[0].create(
        f"{ns_path}/secrets",
        {"metadata": {"name": "db", "labels": {"k": "v"}}, "stringData": {"token": canary}},
    )
    await kubes[0].create(
        f"{ns_path}/configmaps", {"metadata": {"name": "cfg"}, "data": {"token": canary}}
    )
    raw: list[bytes] = []
    cluster = make_settings(env).clusters[0]
    rest = await kubeapi.connect(cluster)
    original = rest._client.call_api

    async def recording_call_api(*args: Any, **kwargs: Any) -> Any:
        response = await original(*args, **kwargs)
        read, content = response.read, response.content

        async def recording_read() -> bytes:
            body: bytes = await read()
            raw.append(body)
            return body

        class RecordingContent:
            def __getattr__(self, name: str) -> Any:
                return getattr(content, name)

            async def readline(self) -> bytes:
                line: bytes = await content.readline()
                raw.append(line)
                return line

        response.read = recording_read
        response.content = RecordingContent()
        return response

    rest._client.call_api = recording_call_api  # type: ignore[method-assign]
    try:
        for plural, kind, name in (("secrets", "Secret", "db"), ("configmaps", "ConfigMap", "cfg")):
            raw.clear()
            page = await rest.list_page(f"{ns_path}/{plural}", limit=50, continue_token="")
            assert raw, "the adapter read no response body"
            listed = orjson.loads(raw[0])
            assert listed["kind"] == "PartialObjectMetadataList"
            assert all("data" not in item for item in listed["items"])
            assert canary.encode() not in raw[0]
            item = next(i for i in page["items"] if i["metadata"]["name"] == name)
            assert (item["apiVersion"], item["kind"]) == ("v1", kind)
            assert set(item) == {"apiVersion", "kind", "metadata"}
            raw.clear()
            async with rest.watch(
                f"{ns_path}/{plural}", resource_version="0", timeout_s=2
            ) as stream:
                event = await anext(stream)
            assert (event["object"]["apiVersion"], event["object"]["kind"]) == ("v1", kind)
            assert "data" not in event["object"]
            assert raw
            assert all(b'"data"' not in line for line in raw)
            assert all(canary.encode() not in body for body in raw)
            assert all(base64.b64encode(canary.encode()) not in body for body in raw)
    finally:
        await rest.close()


async def test_an_empty_metadata_only_list_is_an_empty_page(
    env: environment.Environment, namespace: str
) -> None:
    """The apiserver answers a metadata-only list with no item with ``"items": null``: an
    empty page, not a protocol error (a cluster without any Secret used to retry forever)."""
    rest = await kubeapi.connect(make_settings(env).clusters[0])
    try:
        page = await rest.list_page(
            f"/api/v1/namespaces/{namespace}/secrets", limit=10, continue_token=""
        )
    finally:
        await rest.close()
    assert page["items"] == []
    assert page["metadata"]["resourceVersion"]
