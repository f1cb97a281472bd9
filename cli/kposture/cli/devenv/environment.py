"""``kposture dev up|down|status``: one broker and N clusters, started idempotently.

``up`` also deletes the topics that earlier test, bench and demo runs left on the broker once
they have been idle for an hour (see :mod:`kposture.cli.devenv.pruning`), so the broker's
start-up time does not grow with every run.

Used by the CLI, by the pytest fixtures and by the demo, so that all three run the very same
environment. State lives under ``<home>/state`` (removed by ``down``); builds are cached under
``<home>/cache`` (kept).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from kposture.cli.devenv import clusters, kafka, processes, pruning


@dataclasses.dataclass(frozen=True)
class Environment:
    """What ``dev up`` started: the Kafka bootstrap address, the kubeconfig and its contexts."""

    kafka_bootstrap: str
    kubeconfig: Path
    contexts: list[str]
    state_dir: Path
    start_seconds: float
    pruned_topics: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        """The JSON that ``kposture dev up`` prints."""
        return {
            "kafka_bootstrap": self.kafka_bootstrap,
            "kubeconfig": str(self.kubeconfig),
            "contexts": list(self.contexts),
        }


def state_dir() -> Path:
    """Where the running environment keeps its data, pids and logs."""
    return processes.home_dir() / "state"


def kafka_state() -> Path:
    """The broker's state directory."""
    return state_dir() / "kafka"


def kubeconfig_path() -> Path:
    """The kubeconfig that ``dev up`` writes."""
    return state_dir() / "kubeconfig"


def up(*, clusters_count: int = 2) -> Environment:
    """Start (or reuse) one broker and ``clusters_count`` clusters; write the kubeconfig."""
    if clusters_count < 1:
        raise processes.DevEnvError("at least one cluster is needed")
    started = time.monotonic()
    jar_dir = kafka.ensure_jars()
    bin_dir = clusters.ensure_binaries()
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    broker = kafka.start_broker(state_dir=kafka_state(), jar_dir=jar_dir)
    warnings: list[str] = []
    try:
        pruned = pruning.prune(broker.bootstrap, kafka_state() / "data")
    except Exception as exc:  # noqa: BLE001 - a failed clean-up must not stop the environment
        pruned = []
        warnings.append(f"could not delete the idle topics of earlier runs: {exc!r}")
    endpoints = [
        clusters.start_cluster(index, state_root=root, bin_dir=bin_dir)
        for index in range(1, clusters_count + 1)
    ]
    clusters.write_kubeconfig(endpoints, kubeconfig_path())
    return Environment(
        kafka_bootstrap=broker.bootstrap,
        kubeconfig=kubeconfig_path(),
        contexts=[e.kubeconfig_context for e in endpoints],
        state_dir=root,
        start_seconds=time.monotonic() - started,
        pruned_topics=tuple(pruned),
        warnings=tuple(warnings),
    )


def _cluster_indexes() -> list[int]:
    root = state_dir()
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("cluster-*"):
        suffix = path.name.removeprefix("cluster-")
        if suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def status() -> dict[str, object]:
    """What runs: the broker and each cluster's processes."""
    return {
        "state_dir": str(state_dir()),
        "kafka": kafka.broker_status(state_dir=kafka_state()),
        "clusters": {
            f"kposture-{i}": clusters.cluster_status(i, state_root=state_dir())
            for i in _cluster_indexes()
        },
    }


def down() -> None:
    """Stop everything and remove the running state (cached builds stay)."""
    for index in _cluster_indexes():
        clusters.stop_cluster(index, state_root=state_dir())
    kafka.stop_broker(state_dir=kafka_state())
    shutil.rmtree(state_dir(), ignore_errors=True)
