"""The local Kubernetes clusters (DESIGN.md section 5) run real control planes with kwok nodes."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from kposture.cli.devenv import clusters, environment, processes

pytestmark = pytest.mark.integration

_GO_MOD = Path(__file__).resolve().parents[3] / "deploy" / "local" / "cluster" / "go.mod"
_SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
_ROLLOUT_TIMEOUT_S = 90.0
_INDEXES = (1, 2)


def _pinned_kubernetes_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", _GO_MOD.read_text(), re.MULTILINE)
    assert match, f"k8s.io/kubernetes is not pinned in {_GO_MOD}"
    return match.group(1)


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    # kwok never pulls or runs the image; it only plays the pod's lifecycle.
    container = client.V1Container(name="app", image="registry.k8s.io/pause:3.10")
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )


async def _check_second_cluster(kubeconfig: Path, namespace: str) -> None:
    async with await config.new_client_from_config(
        config_file=str(kubeconfig), context="kposture-2"
    ) as api:
        core = client.CoreV1Api(api)
        namespaces = await core.list_namespace()
        assert {ns.metadata.name for ns in namespaces.items} >= _SYSTEM_NAMESPACES

        version = await client.VersionApi(api).get_code()
        assert version.git_version == _pinned_kubernetes_version()

        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        try:
            apps = client.AppsV1Api(api)
            await apps.create_namespaced_deployment(namespace, _deployment("web", 2))
            deadline = time.monotonic() + _ROLLOUT_TIMEOUT_S
            ready = None
            while time.monotonic() < deadline:
                deployment = await apps.read_namespaced_deployment_status("web", namespace)
                ready = deployment.status.ready_replicas
                if ready == 2:
                    break
                await asyncio.sleep(0.5)
            assert ready == 2, f"web has {ready} ready replicas after {_ROLLOUT_TIMEOUT_S:.0f}s"
        finally:
            await core.delete_namespace(namespace)

    # The clusters are independent: the first one has never seen the second one's namespace.
    async with await config.new_client_from_config(
        config_file=str(kubeconfig), context="kposture-1"
    ) as api:
        names = {ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items}
        assert namespace not in names


def _running(index: int) -> bool:
    status = clusters.cluster_status(index, state_root=environment.state_dir())
    pids = status["processes"]
    return isinstance(pids, dict) and any(pid is not None for pid in pids.values())


# The first run on a machine compiles Kubernetes from source (about half an hour on two
# cores); afterwards the binaries come from the cache and the test takes under a minute.
@pytest.mark.timeout(3600)
def test_two_local_clusters_serve_their_own_kubeconfig_context_and_roll_out_deployments(
    tmp_path: Path,
) -> None:
    """Two clusters start; the second lists its namespaces and rolls out a Deployment."""
    # The same state as `kposture dev up`, whose clusters hold these ports: a running
    # environment is reused and left running, and only the clusters started here are stopped.
    state_root = environment.state_dir()
    started_here = [index for index in _INDEXES if not _running(index)]
    try:
        bin_dir = clusters.ensure_binaries()
        endpoints = [
            clusters.start_cluster(index, state_root=state_root, bin_dir=bin_dir)
            for index in _INDEXES
        ]
        kubeconfig = tmp_path / "kubeconfig"
        clusters.write_kubeconfig(endpoints, kubeconfig)
        # A fresh namespace, so that runs against a long-lived environment never collide.
        asyncio.run(_check_second_cluster(kubeconfig, f"devenv-test-{secrets.token_hex(4)}"))
    except processes.DevEnvError as exc:
        pytest.fail(f"the local clusters did not start: {exc}", pytrace=False)
    finally:
        for index in started_here:
            clusters.stop_cluster(index, state_root=state_root)
