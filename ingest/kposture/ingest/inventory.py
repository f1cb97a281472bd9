"""The inventory: the current objects of the fleet, read back from the compacted topic.

``kposture.resources.v1`` is keyed ``<cluster>/<uid>`` and compacted, and every delete is
followed by a tombstone, so reading it from the beginning to its end offsets and keeping the
last record per key gives exactly the objects that exist now. ``kposture inventory`` prints it;
the ingest service reads it at start-up so that its first lists only publish what changed
while it was down (deletes included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from aiokafka import TopicPartition

from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, resources, topics

log = logging.getLogger(__name__)

_POLL_MS = 500
_ASSIGN_TIMEOUT_S = 30.0


class Inventory:
    """A fold of resource records into the current state, one entry per key."""

    def __init__(self) -> None:
        self.objects: dict[str, resources.ResourceEvent] = {}
        self.undecodable = 0

    def apply(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Fold one record: a tombstone or a delete removes its key, anything else replaces it."""
        if key is None:
            return
        name = key.decode(errors="replace")
        if value is None:
            self.objects.pop(name, None)
            return
        try:
            _, event = envelope.decode_record(headers, value)
        except codec.DecodeError:
            self.undecodable += 1
            return
        if not isinstance(event, resources.ResourceEvent):
            self.undecodable += 1
        elif event.change is resources.Change.DELETED:
            self.objects.pop(name, None)
        else:
            self.objects[name] = event

    def select(
        self, *, cluster: str | None = None, kind: str | None = None
    ) -> list[resources.ResourceEvent]:
        """The current objects, optionally of one cluster and one kind, in a stable order."""
        chosen: Iterable[resources.ResourceEvent] = self.objects.values()
        if cluster is not None:
            chosen = (e for e in chosen if e.cluster == cluster)
        if kind is not None:
            wanted = kind.lower()
            chosen = (e for e in chosen if e.ref.kind.lower() == wanted)
        return sorted(
            chosen, key=lambda e: (e.cluster, e.ref.kind, e.ref.namespace, e.ref.name, e.ref.uid)
        )


async def read(kafka_settings: settings_mod.KafkaSettings) -> Inventory:
    """Read the whole resources topic, from its beginning to its current end offsets."""
    topic = kafka.topic_name(kafka_settings, topics.Topic.RESOURCES)
    consumer = kafka.consumer(kafka_settings, group_id=None, client_id="kposture-inventory")
    inventory = Inventory()
    await consumer.start()
    try:
        available = await consumer.topics()
        if topic not in available:
            return inventory  # nothing was ever published: the inventory is empty
        # Subscribing (without a group, so every partition is ours) is the public way to make
        # the client fetch the topic's partitions; the assignment follows the metadata.
        consumer.subscribe([topic])
        async with asyncio.timeout(_ASSIGN_TIMEOUT_S):
            while not consumer.assignment():  # noqa: ASYNC110 - no event signals an assignment
                await asyncio.sleep(0.02)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=_POLL_MS)
            for records in batches.values():
                for record in records:
                    inventory.apply(record.key, record.value, list(record.headers or ()))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    if inventory.undecodable:
        log.warning("undecodable records skipped", extra={"count": inventory.undecodable})
    return inventory
