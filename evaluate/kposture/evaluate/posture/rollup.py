"""The posture rollup: a faust app that adds every object's contribution up per scope.

It keeps each object's last contribution in a table, turns each change into per-scope
deltas, repartitions them by scope, adds them up in a table and publishes what changed.
Exact for any number of instances and rebalances: every record is handled at least once (a
partition without a committed offset is read again from its start), an object's entry
changes only after its deltas are acknowledged, and a scope's sum drops a delta whose source
offset it has passed, so a record handled again counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

from kposture.evaluate.posture import summing
from kposture.evaluate.stream import processing
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, topics
from kposture.schemas import posture as posture_schema

log = logging.getLogger(__name__)

BATCH_MAX = 2_000
"""Records handled together: their deltas are sent, and acknowledged, as one batch."""
BATCH_WITHIN_S = 0.05
"""How long a batch waits to fill up before it is handled as it is."""
FULL_EVERY = 10
"""Every this many publications, every scope is published, changed or not."""

# What an object's table entry keeps is its contribution with this time, so that bytes
# compare equal when the outcomes do (evaluate stamps every evaluation).
_KEPT_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class RollupApp:
    """The posture rollup, run in the caller's event loop (``start``/``stop``, or ``run``).

    Exactness rests on three rules. Every record is handled at least once, also across
    rebalances (see ``rewind_uncommitted``). An object's new contribution is written to its
    table only after the deltas it moved were acknowledged by the broker, so a record handled
    again computes the same deltas (the table still holds the old contribution), none (it
    holds the new one) or deltas only for scopes that a later record of the object moved
    already (it holds a later one). And a scope's sum applies a delta only if it comes after
    the last one it applied from the same contributions partition, so all of those are
    counted once. Instances with the same ``app_id`` share the partitions; each publishes
    the scopes of the partitions it owns.
    """

    def __init__(self, settings: settings_mod.Settings, *, clock: processing.Clock = common.utcnow):
        self.settings = settings
        self.clock = clock
        evaluate = settings.evaluate
        self.app_id = f"{evaluate.app_id}-posture"
        self._partitions = settings.kafka.partitions
        self._deltas_name = f"{self.app_id}-deltas"
        self._partitioner = DefaultPartitioner()
        self._data_dir = Path(evaluate.data_dir) / "posture"
        self._faust = self._build(self._data_dir)
        self._producer: Any = None
        self._posture_topic = kafka.topic_name(settings.kafka, topics.Topic.POSTURE)
        self._dirty: set[bytes] = set()
        self._published: dict[bytes, list[object]] = {}
        self._task: asyncio.Task[None] | None = None
        self.contributions_handled = 0
        """Contributions records handled so far (changed or not)."""
        self.snapshots_published = 0
        """Posture snapshots published so far."""

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the topics, start the faust app and the publisher."""
        await kafka.create_topics(self.settings.kafka)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._producer = kafka.producer(self.settings.kafka, client_id=f"{self.app_id}-publisher")
        await self._producer.start()
        try:
            await self._faust.start()
        except BaseException:
            await self._producer.stop()
            self._producer = None
            raise
        self._task = asyncio.create_task(self._publish_periodically(), name="posture-publisher")

    async def stop(self) -> None:
        """Stop publishing, then stop the faust app (which commits what was handled).

        Stopping a stopped app does nothing.
        """
        if self._producer is None:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._faust.stop()
        await self._producer.stop()
        self._producer = None

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Start, run until ``stop`` is set, stop."""
        await self.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop()

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, *, full: bool) -> int:
        """Publish the changed scopes of the partitions owned (with ``full``: all of them).

        A scope whose last object left it is published once as all zero. Returns how many
        snapshots were published.
        """
        owned = {
            tp.partition
            for tp in self._faust.assignor.assigned_actives()
            if tp.topic == self._deltas_name
        }
        for key in [k for k in self._published if self._partition_of(k) not in owned]:
            # Another instance may publish it meanwhile: forget what this one published.
            del self._published[key]
        wanted, self._dirty = self._dirty, set()
        if full:
            wanted.update(self._sums.keys())
        now = self.clock()
        snapshots: list[posture_schema.PostureSnapshot] = []
        for key in sorted(wanted):
            raw = self._sums.get(key) if self._partition_of(key) in owned else None
            if raw is None:
                continue
            counts = summing.Sum.decode(raw).counts
            if counts.empty():
                if self._published.pop(key, None) is not None:
                    snapshots.append(self._snapshot(key, counts, now))
                continue
            signature = counts.fields()
            if not full and self._published.get(key) == signature:
                continue
            self._published[key] = signature
            snapshots.append(self._snapshot(key, counts, now))
        await self._send(processing.posture_outputs(snapshots))
        self.snapshots_published += len(snapshots)
        return len(snapshots)

    async def _publish_periodically(self) -> None:
        interval_s = self.settings.evaluate.posture_interval_s
        published = 0
        while True:
            await asyncio.sleep(interval_s)
            await self.publish(full=published % FULL_EVERY == FULL_EVERY - 1)
            published += 1

    async def _send(self, outputs: Sequence[processing.Output]) -> None:
        sent = [
            await self._producer.send(
                self._posture_topic,
                value=output.event.data,
                key=output.key.encode(),
                headers=kafka.record_headers(output.event),
            )
            for output in outputs
        ]
        await asyncio.gather(*sent)

    def _snapshot(
        self, key: bytes, counts: summing.Counts, now: dt.datetime
    ) -> posture_schema.PostureSnapshot:
        return summing.snapshot(summing.parse_scope_key(key.decode()), counts, now=now)

    def _partition_of(self, key: bytes) -> int:
        # How faust's producer places a key (the deltas and the sums' changelog alike).
        every = list(range(self._partitions))
        return int(self._partitioner(key, every, every))

    # -- the faust app -----------------------------------------------------------------------

    def _build(self, data_dir: Path) -> Any:
        kafka_settings = self.settings.kafka
        app: Any = faust.App(
            self.app_id,
            broker=[f"kafka://{host}" for host in kafka_settings.bootstrap_servers.split(",")],
            store="memory://",
            datadir=str(data_dir),
            topic_partitions=self._partitions,
            topic_replication_factor=kafka_settings.replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=0,
            web_enabled=False,
            # A rebalance waits for the batches in hand to be handled, committed and their
            # table writes flushed, so no write races the recovery of the tables.
            stream_wait_empty=True,
        )
        rewound = {kafka.topic_name(kafka_settings, topics.Topic.CONTRIBUTIONS), self._deltas_name}

        async def rewind_uncommitted(sender: Any, **_: Any) -> None:
            # After a rebalance faust drops the records it had fetched and seeks every
            # partition back to its committed offset; aiokafka's seek skips a partition
            # whose committed offset is none or 0, which would go on after the dropped
            # records. Such a partition is read again from its start: at least once.
            committed = await app.consumer.seek_to_committed()
            for tp, offset in committed.items():
                if tp.topic in rewound and not offset:
                    await app.consumer.seek(tp, 0)

        app.on_rebalance_complete.connect(rewind_uncommitted)

        def table(name: str) -> Any:
            # Written from batches that mix partitions, so the key places an entry (as it
            # placed the record it comes from), not the event being handled.
            return app.Table(
                name,
                partitions=self._partitions,
                key_type=bytes,
                value_type=bytes,
                use_partitioner=True,
            )

        contributions = app.topic(
            kafka.topic_name(kafka_settings, topics.Topic.CONTRIBUTIONS),
            key_type=bytes,
            value_type=bytes,
        )
        deltas = app.topic(
            self._deltas_name,
            key_type=bytes,
            value_type=bytes,
            partitions=self._partitions,
            internal=True,
        )
        objects = table("objects")
        self._sums = table("sums")
        self._deltas = deltas
        self._objects = objects

        async def follow_contributions(stream: Any) -> None:
            async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
                await self._contributions_changed(events)
                for event in events:
                    await stream.ack(event)

        async def add_deltas(stream: Any) -> None:
            async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
                self._add(events)
                for event in events:
                    await stream.ack(event)

        app.agent(contributions, name="posture-contributions")(follow_contributions)
        app.agent(deltas, name="posture-deltas")(add_deltas)
        return app

    async def _contributions_changed(self, events: Iterable[Any]) -> None:
        # The deltas are acknowledged before the table changes: see the class docstring.
        objects = self._objects
        changed: dict[bytes, bytes | None] = {}
        sent = []
        for event in events:
            self.contributions_handled += 1
            key, message = event.key, event.message
            new = _kept(key, event.value)
            old = changed[key] if key in changed else objects.get(key)
            if new == old:
                continue  # most evaluations change no outcome
            moved = summing.deltas(_contribution(old), _contribution(new))
            for scope, delta in moved.items():
                value = summing.encode_delta(
                    delta, partition=message.partition, offset=message.offset
                )
                sent.append(
                    await self._deltas.send(key=summing.scope_key(scope).encode(), value=value)
                )
            changed[key] = new
        for delivery in sent:
            await delivery
        for key, kept in changed.items():
            if kept is None:
                if key in objects:
                    del objects[key]
            else:
                objects[key] = kept

    def _add(self, events: Iterable[Any]) -> None:
        sums = self._sums
        touched: dict[bytes, summing.Sum] = {}
        for event in events:
            key = event.key
            total = touched.get(key)
            if total is None:
                raw = sums.get(key)
                total = touched[key] = summing.Sum() if raw is None else summing.Sum.decode(raw)
            partition, offset, delta = summing.decode_delta(event.value)
            total.apply(delta, partition=partition, offset=offset)
        for key, total in touched.items():
            # An emptied scope stays: what it applied keeps deltas sent again out of it.
            sums[key] = total.encode()
            self._dirty.add(key)


def _kept(key: bytes, value: bytes | None) -> bytes | None:
    # A contribution as the objects table keeps it; ``None`` for a tombstone or a record that
    # is not a contribution (logged: evaluate never sends one, so it is a bug to look at).
    if value is None:
        return None
    try:
        contribution = codec.decode(value, posture_schema.Contribution)
    except codec.DecodeError as exc:
        log.warning("posture: contribution %r left out: %s", key, exc.reason)
        return None
    return codec.encode(
        posture_schema.Contribution(
            cluster=contribution.cluster,
            namespace=contribution.namespace,
            outcomes=contribution.outcomes,
            evaluated_at=_KEPT_TIME,
        )
    )


def _contribution(kept: bytes | None) -> posture_schema.Contribution | None:
    return None if kept is None else codec.decode(kept, posture_schema.Contribution)
