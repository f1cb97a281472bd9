"""Kubernetes API clients, one per configured cluster (a kubeconfig context or in-cluster).

kubernetes_asyncio appears only here and in the service adapters. Each client is independent,
so one cluster's failure never touches another's connection pool.
"""

from __future__ import annotations

from kubernetes_asyncio import client, config

from kposture.runtime import settings as settings_mod


class ClusterConfigError(RuntimeError):
    """A cluster's kubeconfig or context cannot be loaded; the message names the cluster."""

    retriable = False


async def api_client(cluster: settings_mod.ClusterSettings) -> client.ApiClient:
    """A configured API client for ``cluster``; close it with ``await api.close()``."""
    try:
        if cluster.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        return await config.new_client_from_config(
            config_file=cluster.kubeconfig, context=cluster.context
        )
    except (config.ConfigException, OSError, KeyError, ValueError) as exc:
        raise ClusterConfigError(
            f"cluster {cluster.name!r}: cannot load its config: {exc}"
        ) from exc
