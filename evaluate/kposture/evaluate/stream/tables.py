"""Tables backed by compacted changelog topics: one partition's objects, or a global table.

A ``Table`` is a dict in memory and the changelog topic that rebuilds it: the ``objects``
table holds the states of the objects of the partitions a worker owns, each written to the
changelog partition of its source partition; a global table (``shared``) is read in full by
every worker, whichever partition wrote it. ``GlobalFollower`` reads the global tables'
changelogs ``read_committed``, first to their end before the worker handles any record, then
continuously, and hands each record to the app, which applies it (``apply_record``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka.structs import TopicPartition

from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table's data and the changelog topic it is rebuilt from."""

    data: Any  # a dict of bytes, or an indexed subclass of it
    changelog: str
    shared: bool = False  # a global table: every worker keeps all of it


def changelog_name(app_id: str, table: str) -> str:
    """The changelog topic of one table of an app."""
    return f"{app_id}-{table}-changelog"


def load(data: dict[bytes, Any], records: Sequence[Any]) -> None:
    """Apply changelog records to ``data`` in order: the last record of a key wins."""
    for record in records:
        if record.value is None:
            data.pop(record.key, None)
        else:
            data[record.key] = record.value


async def restore(
    settings: settings_mod.Settings,
    changelog: str,
    partitions: Iterable[int],
    apply: Callable[[Sequence[Any]], None],
    *,
    client_id: str,
) -> None:
    """Read ``partitions`` of ``changelog`` from the beginning to their end into ``apply``."""
    consumer = kafka.consumer(settings.kafka, group_id=None, client_id=client_id)
    await consumer.start()
    try:
        await kafka.read_to_end(
            consumer, [TopicPartition(changelog, p) for p in sorted(partitions)], apply
        )
    finally:
        await consumer.stop()


class GlobalFollower:
    """Reads every partition of the global tables' changelogs, to the end and then on."""

    def __init__(
        self,
        settings: settings_mod.Settings,
        changelogs: Iterable[str],
        *,
        apply: Callable[[Sequence[Any]], None],
        client_id: str,
    ) -> None:
        self.settings = settings
        self.changelogs = list(changelogs)
        self.apply = apply
        self._consumer = kafka.consumer(settings.kafka, group_id=None, client_id=client_id)
        self._started = False

    async def catch_up(self) -> None:
        """Start, and read every partition to its end as of now."""
        consumer = self._consumer
        await consumer.start()
        self._started = True
        # Changelogs are created with the configured partition count (``create_changelogs``).
        count = self.settings.kafka.partitions
        partitions = [TopicPartition(t, p) for t in self.changelogs for p in range(count)]
        await kafka.read_to_end(consumer, partitions, self.apply)

    async def follow(self) -> None:
        """Apply new records as they come, until cancelled."""
        while True:
            fetched = await self._consumer.getmany(timeout_ms=1000)
            for records in fetched.values():
                self.apply(records)

    async def stop(self) -> None:
        """Stop the consumer."""
        if self._started:
            await self._consumer.stop()
