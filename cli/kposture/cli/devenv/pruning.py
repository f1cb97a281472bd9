"""Remove the topics that test, bench and demo runs left on the local broker.

Every test, bench run and demo run works under its own topic prefix, so that runs never read
each other's records. Runs that are killed (or tests, which never clean up after themselves)
leave their topics behind, and a broker that has to load thousands of forgotten partitions on
start-up takes minutes to serve. ``kposture dev up`` therefore deletes the topics of such runs
once they have been idle for an hour. Only names that these runs generate are considered:

    t<10 hex>.*, t<10 hex>-*        a test's prefix (and its evaluate app's changelogs)
    it-<10 hex>.*                   an ingest integration test
    bench-<8 hex>.*, bench-<8 hex>-*  a bench run
    demo<14 digits>.*, demo<14 digits>-*  a demo run

A topic is idle when none of its partitions' segment files (``*.log``) changed for the idle
period; the broker's own data directory is read for that, since Kafka offers no "last write"
time for a topic. Topics with any other name are never touched.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod

__all__ = ["DEFAULT_IDLE_S", "EPHEMERAL_TOPIC", "delete_topics", "prune", "stale_topics"]

DEFAULT_IDLE_S = 3600.0
EPHEMERAL_TOPIC = re.compile(
    r"^(?:t[0-9a-f]{10}|it-[0-9a-f]{10}|bench-[0-9a-f]{8}|demo[0-9]{14})[.-]"
)
# A partition directory is "<topic>-<partition>"; one being deleted carries a ".<id>-delete"
# suffix and one being moved a "-future" suffix: neither is a live topic.
_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>[0-9]+)$")


def stale_topics(data_dir: Path, *, idle_s: float, now: float | None = None) -> list[str]:
    """The ephemeral topics in ``data_dir`` whose segments have not changed for ``idle_s``.

    ``now`` is a ``time.time()`` value (defaults to the current time). The result is sorted.
    """
    now = time.time() if now is None else now
    newest: dict[str, float] = {}
    try:
        entries = list(data_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _PARTITION_DIR.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        topic = match["topic"]
        if not EPHEMERAL_TOPIC.match(topic):
            continue
        newest[topic] = max(newest.get(topic, 0.0), _last_write(entry))
    return sorted(t for t, written in newest.items() if now - written >= idle_s)


def _last_write(partition_dir: Path) -> float:
    stamps = []
    for segment in partition_dir.glob("*.log"):
        try:
            stamps.append(segment.stat().st_mtime)
        except OSError:
            continue
    if stamps:
        return max(stamps)
    try:
        return partition_dir.stat().st_mtime
    except OSError:
        return time.time()


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 120.0) -> list[str]:
    """Delete ``names`` on the broker at ``bootstrap``; the names it was asked to delete.

    Names the broker does not list are left out. Runs its own event loop in a worker thread,
    so it can be called from synchronous code that itself runs under an event loop (a pytest
    fixture of an asyncio test, say).
    """
    wanted = frozenset(names)
    if not wanted:
        return []
    settings = settings_mod.KafkaSettings(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    outcome: list[list[str]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(asyncio.run(kafka.delete_topics(settings, wanted.__contains__)))
        except BaseException as exc:  # noqa: BLE001 - handed over to the calling thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="kposture-prune", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def prune(bootstrap: str, data_dir: Path, *, idle_s: float = DEFAULT_IDLE_S) -> list[str]:
    """Delete the ephemeral topics idle for ``idle_s``; the names deleted."""
    return delete_topics(bootstrap, stale_topics(data_dir, idle_s=idle_s))
