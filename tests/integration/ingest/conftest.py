"""Fixtures for the ingest integration tests: the real local environment and its clients.

The environment is started through ``kposture.cli.devenv.environment.up()``, the very code of
``kposture dev up``; if it cannot start, the tests fail with the reason, they never skip. Each
test gets its own topic prefix (see ``ingest_it_support.make_settings``), so no test sees
another's records.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from ingest_it_support import Kube
from kubernetes_asyncio import config

from kposture.cli.devenv import environment


@pytest.fixture(scope="session")
def env() -> environment.Environment:
    """The shared local environment (one broker, two clusters), started or reused."""
    try:
        return environment.up(clusters_count=2)
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported as the reason
        pytest.fail(f"the local environment cannot start: {type(exc).__name__}: {exc}")


@pytest.fixture(scope="session")
async def kubes(env: environment.Environment) -> AsyncIterator[list[Kube]]:
    """One admin client per cluster, in context order."""
    apis = [
        await config.new_client_from_config(config_file=str(env.kubeconfig), context=context)
        for context in env.contexts
    ]
    yield [Kube(api) for api in apis]
    for api in apis:
        await api.close()


@pytest.fixture
async def namespace(kubes: list[Kube]) -> AsyncIterator[str]:
    """A fresh namespace, created in every cluster and deleted afterwards."""
    name = f"it-ingest-{uuid.uuid4().hex[:8]}"
    for kube in kubes:
        await kube.namespace(name)
    yield name
    for kube in kubes:
        with contextlib.suppress(AssertionError):
            await kube.delete(f"/api/v1/namespaces/{name}")
