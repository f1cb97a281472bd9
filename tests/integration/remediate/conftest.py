"""Fixtures for the remediate integration tests: the real broker and apiservers, never fakes.

The broker is the one of ``kposture dev up`` (started or reused through its code); tests that
need clusters start the whole environment. If something cannot start, the test fails with the
reason; nothing is skipped. Each test gets its own topic prefix and its own namespace.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client, config
from remediate_it_support import Stack, make_settings, stack

from kposture.cli.devenv import environment, kafka
from kposture.runtime import settings as settings_mod


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The local broker's bootstrap address (started or reused like `kposture dev up`)."""
    try:
        broker = kafka.start_broker(
            state_dir=environment.kafka_state(), jar_dir=kafka.ensure_jars()
        )
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported as the reason
        pytest.fail(f"the local Kafka broker cannot start: {type(exc).__name__}: {exc}")
    return broker.bootstrap


@pytest.fixture(scope="session")
def env() -> environment.Environment:
    """The whole local environment (one broker, two clusters), started or reused."""
    try:
        return environment.up(clusters_count=2)
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported as the reason
        pytest.fail(f"the local environment cannot start: {type(exc).__name__}: {exc}")


@pytest.fixture
def settings(env: environment.Environment, topic_prefix: str) -> settings_mod.Settings:
    """Settings for this test: its own topics, the first cluster, enforce by label only."""
    return make_settings(env, topic_prefix)


@pytest.fixture
async def api(env: environment.Environment) -> AsyncIterator[client.ApiClient]:
    """An admin client of the first cluster (the test's own hands, not the remediator's)."""
    api = await config.new_client_from_config(
        config_file=str(env.kubeconfig), context=env.contexts[0]
    )
    yield api
    await api.close()


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace in enforce mode, deleted afterwards."""
    name = f"it-remediate-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(
        {"metadata": {"name": name, "labels": {"kposture.io/mode": "enforce"}}}
    )
    yield name
    with contextlib.suppress(client.ApiException):
        await core.delete_namespace(name)


@pytest.fixture
async def remediator(settings: settings_mod.Settings) -> AsyncIterator[Stack]:
    """A remediator wired to the real topics and the real first cluster."""
    async with stack(settings) as running:
        yield running
