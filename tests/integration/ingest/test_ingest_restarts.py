"""Ingest across restarts: of the broker, and of an apiserver whose history was compacted.

The broker and the cluster restarted here are dedicated ones in temporary state directories
(started by the same functions as ``kposture dev``), so restarting them never disturbs the
shared environment that other tests use.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from ingest_it_support import Event, Kube, TopicTail, make_settings, of_namespace, running_ingest
from kubernetes_asyncio import config

from kposture.cli.devenv import clusters, environment, kafka, processes
from kposture.ingest import inventory, kubeapi
from kposture.runtime import settings as settings_mod

pytestmark = pytest.mark.integration

UPDATES = 40


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Path, kafka.BrokerEndpoint, Path]]:
    """A broker of this test alone: (state dir, endpoint, jar dir); stopped afterwards."""
    state = tmp_path / "kafka"
    try:
        jars = kafka.ensure_jars()
        port = processes.free_port_pair()  # clients on it, the controller on the next
        endpoint = kafka.start_broker(state_dir=state, jar_dir=jars, port=port)
    except processes.DevEnvError as exc:
        pytest.fail(f"cannot start a Kafka broker: {exc}")
    yield state, endpoint, jars
    kafka.stop_broker(state_dir=state)


async def test_broker_restart_while_changes_continue_loses_no_event(
    env: environment.Environment,
    kubes: list[Kube],
    namespace: str,
    own_broker: tuple[Path, kafka.BrokerEndpoint, Path],
) -> None:
    """Every one of a stream of updates reaches the topic although the broker was down for a
    while in the middle, and the inventory ends at the last state."""
    state, endpoint, jars = own_broker
    clusters = [
        settings_mod.ClusterSettings(
            name="c1", kubeconfig=str(env.kubeconfig), context=env.contexts[0]
        )
    ]
    settings = make_settings(env, clusters=clusters, bootstrap=endpoint.bootstrap)
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    kube = kubes[0]
    async with running_ingest(settings, ready=["cluster/c1", "kafka"]):
        created = await kube.create(path, {"metadata": {"name": "counter"}})
        key = f"c1/{created['metadata']['uid']}"
        for n in range(UPDATES):
            await kube.merge(f"{path}/counter", {"metadata": {"labels": {"n": str(n)}}})
            if n == 5:
                await asyncio.to_thread(kafka.stop_broker, state_dir=state)
                assert not processes.port_open(endpoint.port), "the broker is still serving"
            if n == 25:
                await asyncio.to_thread(
                    kafka.start_broker, state_dir=state, jar_dir=jars, port=endpoint.port
                )
            await asyncio.sleep(0.1)
        async with TopicTail(settings) as tail:

            def last_seen(events: list[Event]) -> bool:
                return any(
                    e.key == key
                    and e.event is not None
                    and e.event.object["metadata"].get("labels", {}).get("n") == str(UPDATES - 1)
                    for e in events
                )

            events = await tail.until(last_seen, within_s=120)
    values = [
        int(e.event.object["metadata"]["labels"]["n"])
        for e in events
        if e.key == key and e.event is not None and "labels" in e.event.object["metadata"]
    ]
    assert set(values) == set(range(UPDATES)), "an update was lost"
    assert values[-1] == UPDATES - 1
    current = await inventory.read(settings.kafka)
    assert current.objects[key].object["metadata"]["labels"] == {"n": str(UPDATES - 1)}


# Indexes tried for a cluster of this test alone (its index picks its ports), so that stopping
# its apiserver disturbs no other test; the shared environment uses 1 and 2.
_OWN_CLUSTER_INDEXES = range(31, 61)
_LAUNCHER = (
    "import typer\n"
    "from kposture.cli import ingest_cmd\n"
    "app = typer.Typer()\n"
    "ingest_cmd.register(app)\n"
    "app()\n"
)


async def _configmaps(kube: Kube, namespace: str) -> dict[str, dict[str, str]]:
    listed = await kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    return {
        item["metadata"]["uid"]: item["metadata"].get("labels") or {}
        for item in listed["items"]
        if item["metadata"]["name"].startswith("cm-")
    }


def _free_cluster_index(state_root: Path) -> int:
    for index in _OWN_CLUSTER_INDEXES:
        ports = clusters.cluster_status(index, state_root=state_root)["ports"]
        assert isinstance(ports, dict)
        if not any(processes.port_open(int(p)) for p in ports.values()):
            return index
    pytest.fail("no free ports for a dedicated cluster")


async def _converges(
    published: Callable[[], Awaitable[dict[str, dict[str, str]]]],
    expected: dict[str, dict[str, str]],
) -> None:
    async with asyncio.timeout(90):
        while await published() != expected:  # noqa: ASYNC110 - polls the topic
            await asyncio.sleep(0.5)


async def test_held_back_watcher_after_compaction_and_apiserver_restart_converges(
    env: environment.Environment, tmp_path: Path
) -> None:
    """An ingest process frozen while the apiserver restarts, objects change and are deleted
    and etcd history is compacted, afterwards publishes an inventory equal to a fresh list,
    deletes included; so it does after an apiserver restart amid continuing changes."""
    index = _free_cluster_index(tmp_path)
    try:
        bin_dir = await asyncio.to_thread(clusters.ensure_binaries)
        endpoint = await asyncio.to_thread(
            clusters.start_cluster,
            index,
            state_root=tmp_path,
            bin_dir=bin_dir,
            etcd_compaction_interval="2s",
        )
    except processes.DevEnvError as exc:
        pytest.fail(f"cannot start a dedicated cluster: {exc}")
    kubeconfig = tmp_path / "kubeconfig"
    clusters.write_kubeconfig([endpoint], kubeconfig)
    api = await config.new_client_from_config(
        config_file=str(kubeconfig), context=endpoint.kubeconfig_context
    )
    kube = Kube(api)
    cluster = settings_mod.ClusterSettings(
        name="solo", kubeconfig=str(kubeconfig), context=endpoint.kubeconfig_context
    )
    settings = make_settings(env, clusters=[cluster])
    settings = msgspec.structs.replace(
        settings,
        ingest=msgspec.structs.replace(settings.ingest, kinds=["v1/ConfigMap", "v1/Namespace"]),
    )
    config_file = tmp_path / "ingest.yaml"
    config_file.write_text(settings_mod.dump(settings))
    log_file = (tmp_path / "ingest.log").open("w")
    ingest = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LAUNCHER,
        "ingest",
        "--config",
        str(config_file),
        stdout=log_file,
        stderr=asyncio.subprocess.STDOUT,
    )
    namespace = "held-back"
    try:
        await kube.namespace(namespace)
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        for n in range(10):
            await kube.create(path, {"metadata": {"name": f"cm-{n}", "labels": {"v": "0"}}})
        async with TopicTail(settings) as tail:
            await tail.until(
                lambda events: len([e for e in of_namespace(events, namespace) if e.event]) >= 10,
                within_s=90,
            )
        before = await kube.request("GET", path)
        ingest.send_signal(signal.SIGSTOP)
        # Restarted while ingest is frozen, so that none of the changes below can reach the old
        # connection's socket buffer: ingest must find them by relisting.
        await asyncio.to_thread(
            clusters.restart_apiserver, index, state_root=tmp_path, bin_dir=bin_dir
        )
        for n in range(5):
            await kube.merge(f"{path}/cm-{n}", {"metadata": {"labels": {"v": "1"}}})
        for n in range(5, 8):
            await kube.delete(f"{path}/cm-{n}")
        for n in range(10, 12):
            await kube.create(path, {"metadata": {"name": f"cm-{n}", "labels": {"v": "0"}}})
        await asyncio.sleep(5)  # two compaction intervals: the watcher's version is history
        # A watch resumed from before the restart is refused with 410 Gone, which the adapter
        # raises as GoneError (the watcher's answer to it, a relist, is unit-tested).
        rest = await kubeapi.connect(cluster)
        try:
            with pytest.raises(kubeapi.GoneError):
                async with rest.watch(
                    path, resource_version=before["metadata"]["resourceVersion"], timeout_s=5
                ) as stream:
                    await anext(stream)
        finally:
            await rest.close()
        ingest.send_signal(signal.SIGCONT)
        expected = await _configmaps(kube, namespace)
        assert len(expected) == 9

        async def published() -> dict[str, dict[str, str]]:
            current = await inventory.read(settings.kafka)
            return {
                e.ref.uid: e.object["metadata"].get("labels") or {}
                for e in current.select(cluster="solo", kind="ConfigMap")
                if e.ref.namespace == namespace and e.ref.name.startswith("cm-")
            }

        await _converges(published, expected)

        # Then the apiserver restarts while changes continue: the final state still arrives.
        async def churn() -> None:
            for n in range(30):
                while True:
                    try:
                        await kube.merge(
                            f"{path}/cm-{n % 5}", {"metadata": {"labels": {"v": f"r{n}"}}}
                        )
                        break
                    except (AssertionError, aiohttp.ClientError, OSError):
                        await asyncio.sleep(0.2)  # the apiserver is restarting
                await asyncio.sleep(0.05)

        writer = asyncio.create_task(churn())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(
            clusters.restart_apiserver, index, state_root=tmp_path, bin_dir=bin_dir
        )
        await writer
        await _converges(published, await _configmaps(kube, namespace))
    finally:
        if ingest.returncode is None:
            ingest.send_signal(signal.SIGCONT)
            ingest.terminate()
            await asyncio.wait_for(ingest.wait(), 30)
        log_file.close()
        await api.close()
        clusters.stop_cluster(index, state_root=tmp_path)
    text = (tmp_path / "ingest.log").read_text()
    assert '"synthetic_deletes": 3' in text or '"synthetic_deletes":3' in text, text[-3000:]
