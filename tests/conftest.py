"""Shared fixtures: the real local environment (DESIGN.md section 5), started once per session.

A test that needs Kafka or an apiserver uses ``local_env``; if the environment cannot start,
the fixture raises with the reason, so those tests error rather than skip.
"""

from __future__ import annotations

import uuid

import pytest

from kposture.cli.devenv import environment


@pytest.fixture(scope="session")
def local_env() -> environment.Environment:
    """One Kafka broker and two clusters, started (or reused) through `kposture dev up`'s code."""
    return environment.up(clusters_count=2)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to one test, so tests never read each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"
