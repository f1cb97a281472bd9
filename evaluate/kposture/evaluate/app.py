"""The evaluate service: ``processing.Processor`` on the transactional stream runtime.

Each worker joins a consumer group on the ``resources`` topic (``stream.consuming``). A
partition's records are decoded, evaluated against the policy in force, and their outputs put
on that partition's writer: the object's new state to the ``objects`` changelog, transitions to
``findings``, poison records to ``dlq``. One Kafka transaction per partition commits those with
the input offsets (``stream.transactions``), so after any crash a record's outputs exist once.

Cross-object state lives in global tables that every worker keeps in full, read from their
changelogs (``stream.tables.GlobalFollower``): ``namespaces`` (namespaceSelector matches,
owners, criticality) and ``inventory`` (what cross-object checks and priority read). A change
there queues the concerned objects of the worker's own partitions for re-evaluation
(``_reevaluate``), whoever wrote it. ``posture-shares`` holds each partition's posture counts;
the owner of partition 0 adds them up and publishes the snapshots.

Policy comes from the compacted ``baselines`` topic (``policy_following``); a change swaps the
compiled policy and sweeps every owned partition, as does each assignment and each expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import orjson

from kposture.evaluate.engine import tracking
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.posture import tallying
from kposture.evaluate.stream import (
    consuming,
    inventory,
    periodic,
    policy_following,
    processing,
    publishing,
    storing,
    tables,
    transactions,
    watched_dict,
)
from kposture.runtime import health, kafka, tracing
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, resources, topics

log = logging.getLogger(__name__)
_tracer = tracing.tracer(__name__)

PRODUCER_LINGER_S = 0.005
"""How long a batch of outputs waits to fill (as ``runtime.kafka.producer``'s 5 ms)."""
NAMESPACES_CACHED = 4096
"""Parsed namespace objects kept, so an object's namespace is not parsed per event."""
INVENTORIES_CACHED = 4096
"""Assembled inventories (per cluster, namespace and views) kept until their entries change."""
SWEEP_YIELD_EVERY = 200
"""Objects re-evaluated by a sweep between two yields to the event loop."""
WRITER_HEADER = "kposture-writer"
"""The header that names the worker which wrote a global table's changelog record."""
UNCONFIRMED_S = 60.0
"""How long a worker's own global-table write may take to come back before it counts as lost."""
UNCONFIRMED_KEPT = 65_536
"""Keys with own writes on their way back, beyond which the ones older than UNCONFIRMED_S go."""
OBJECTS, NAMESPACES, INVENTORY, SHARES = "objects", "namespaces", "inventory", "posture-shares"
"""The tables, each rebuilt from the changelog topic ``<app id>-<table>-changelog``."""


class EvaluateApp:
    """One evaluate worker: the stream, the tables, the policy follower and the periodic tasks."""

    def __init__(
        self,
        settings: settings_mod.Settings,
        *,
        clock: processing.Clock = common.utcnow,
        readiness: health.Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.readiness = readiness or health.Readiness()
        self.store = policy_store.PolicyStore(settings.evaluate.baselines)
        self.processor: processing.Processor | None = None
        self._names = {t: kafka.topic_name(settings.kafka, t) for t in topics.Topic}
        self._stream: consuming.Stream | None = None
        self._global: tables.GlobalFollower | None = None
        self._producer: Any = None
        self._publisher: publishing.Publisher | None = None
        self._follower: policy_following.PolicyFollower | None = None
        app_id = settings.evaluate.app_id
        self._objects = tables.Table({}, tables.changelog_name(app_id, OBJECTS))
        self._namespaces = tables.Table(
            watched_dict.Watched(), tables.changelog_name(app_id, NAMESPACES), shared=True
        )
        self._parsed_namespaces: dict[bytes, tuple[bytes, Mapping[str, Any]]] = {}
        # Every cluster's inventory entries; ``_entries`` is its indexed data.
        self._inventory_table = tables.Table(
            inventory.Indexed(), tables.changelog_name(app_id, INVENTORY), shared=True
        )
        self._parsed_entries: dict[bytes, Any] = {}
        # The views the policy in force needs kept, and the last inventories assembled from
        # them, with the entry versions they were built at.
        self._kept_views: frozenset[str] = frozenset()
        self._inventories: dict[tuple[Any, ...], tuple[tuple[int, ...], dict[str, Any]]] = {}
        # Each namespace's surroundings (for priority), with the entry versions they were
        # built at.
        self._surroundings: dict[
            tuple[str, str], tuple[tuple[int, ...], tracking.Surroundings]
        ] = {}
        # Every partition's posture share, which the owner of partition 0 adds up and publishes.
        self._shares = tables.Table(
            tallying.Shares(), tables.changelog_name(app_id, SHARES), shared=True
        )
        self._board = tallying.Board()
        self._reconcile: set[int] = set()  # partitions rebuilt since the last posture tick
        # Partitions whose tally was rebuilt from the table since they were assigned: only
        # their shares are whole enough to tell. And whether the next snapshots must be all
        # of them: the last ones published may be another worker's (partition 0 moved).
        self._tallied: set[int] = set()
        self._publish_all = True
        self._sweeps: asyncio.Queue[str] = asyncio.Queue()
        # The objects table's keys by source partition, then cluster and namespace: built by
        # the first sweep after a rebalance (one pass over the table) and kept current by
        # ``_store`` from then on.
        self._by_partition: dict[int, dict[tuple[str, str], dict[bytes, None]]] | None = None
        # Changes of the global tables that this worker's objects have not been re-evaluated
        # for yet (``_follow_namespace``, ``_follow_inventory``): namespaces whose object
        # changed, and other workers' inventory changes with the surroundings they replaced.
        # ``_after_changes`` handles both, once the change is in place.
        self._changed_namespaces: set[bytes] = set()
        self._changed_entries: list[tuple[inventory.Update, dict[str, Any]]] = []
        self._follow_scheduled = False
        # This worker's objects due for re-evaluation after a change they read (key: whether
        # only their priority can have moved), and the signal that there are some.
        self._due: dict[bytes, bool] = {}
        self._due_signal = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._writing = False  # set while this worker writes the inventory itself
        # Names this worker in its global tables' changelog records, so it does not apply
        # them again when they come back (``_take_changelog``).
        self._writer = uuid.uuid4().hex.encode()
        # This worker's global-table writes on their way back through the changelog, per
        # (changelog, key): how many, and when the last was made (``_take_changelog``).
        self._unconfirmed: dict[tuple[str, bytes], list[float]] = {}
        self._shared = {
            table.changelog: table
            for table in (self._namespaces, self._inventory_table, self._shares)
        }
        cast(watched_dict.Watched, self._namespaces.data).listener = _guarded(
            self._follow_namespace, "a namespace change"
        )
        self._entries.listener = _guarded(self._follow_inventory, "an inventory change")
        self.processed = 0
        """Resource records handled so far (evaluated, skipped or dead-lettered)."""

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the policy and the global tables, then join the group; returns once this
        worker's first assignment is restored."""
        settings = self.settings
        await kafka.create_topics(settings.kafka)
        await kafka.create_changelogs(
            settings.kafka,
            [self._objects.changelog, *self._shared],
        )
        self._producer = kafka.producer(
            settings.kafka,
            client_id=f"{settings.evaluate.app_id}-publisher",
            linger_ms=int(PRODUCER_LINGER_S * 1000),
        )
        await self._producer.start()
        self._publisher = publishing.Publisher(self._producer, linger_s=PRODUCER_LINGER_S)
        await self._publisher.prepare(
            self._names[t] for t in (topics.Topic.FINDINGS, topics.Topic.POSTURE, topics.Topic.DLQ)
        )
        self._follower = policy_following.PolicyFollower(
            settings,
            self.store,
            clock=self.clock,
            readiness=self.readiness,
            dead_letter=self._send,
        )
        self.processor = processing.Processor(await self._follower.start(), clock=self.clock)
        self.processor.surroundings = self._surroundings_of
        self._kept_views = inventory.kept_views(self.processor.policy.engine.inventory_views)
        self._global = tables.GlobalFollower(
            settings,
            self._shared,
            apply=self._take_changelog,
            client_id=f"{settings.evaluate.app_id}-tables",
        )
        await self._global.catch_up()
        self._stream = consuming.Stream(
            settings,
            topic=self._names[topics.Topic.RESOURCES],
            group_id=settings.evaluate.app_id,
            handler=_Handler(self),
            readiness=self.readiness,
        )
        await self._stream.start()
        stream, global_follower = self._stream, self._global
        processor, publisher, follower = self.processor, self._publisher, self._follower

        def publish() -> Awaitable[None]:
            interval_s = self.settings.evaluate.posture_interval_s
            return periodic.publish_posture(self._posture, interval_s=interval_s, send=self._send)

        def expired() -> Awaitable[None]:
            return periodic.watch_expiry(
                processor,
                clock=self.clock,
                on_expiry=lambda: self._sweeps.put_nowait("exception expired"),
            )

        loops: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
            ("evaluate-stream", stream.run),
            ("evaluate-tables", global_follower.follow),
            ("evaluate-publisher", publisher.run),
            ("evaluate-policy", lambda: follower.follow(self._on_policy)),
            ("evaluate-sweeps", self._run_sweeps),
            ("evaluate-reevaluate", self._reevaluate),
            ("evaluate-posture", publish),
            ("evaluate-expiry", expired),
        )
        for name, start in loops:
            kept = periodic.keep_running(name, start, readiness=self.readiness)
            self._tasks.append(asyncio.create_task(kept, name=name))
        await stream.wait_assigned()
        self.readiness.report("kafka", ok=True, detail="consuming")

    async def stop(self) -> None:
        """Stop the tasks, commit what is pending and leave the group."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._stream is not None:
            await self._stream.stop()
        if self._global is not None:
            await self._global.stop()
        if self._publisher is not None:
            await self._publisher.flush()
        if self._producer is not None:
            await self._producer.stop()
        if self._follower is not None:
            await self._follower.stop()
        self.readiness.report("kafka", ok=False, detail="stopped")

    @property
    def owned(self) -> set[int]:
        """The partitions of the resources topic this worker owns and has restored."""
        return self._owned()

    async def wait_assigned(self) -> None:
        """Return once this worker's latest partition assignment has been restored."""
        if self._stream is not None:
            await self._stream.wait_assigned()

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Start, serve ``/livez``, ``/readyz`` and ``/metrics``; run until ``stop`` is set."""
        http = self.settings.evaluate.http
        runner = None
        await self.start()
        try:
            if http.port:
                runner = await health.serve(
                    health.make_app(self.readiness), host=http.host, port=http.port
                )
            await (stop or asyncio.Event()).wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            await self.stop()

    # -- the stream ------------------------------------------------------------------------

    async def _assigned(self, partitions: set[int]) -> None:
        # The stream started these partitions' producers (fencing their previous owners):
        # load their objects from the changelog, then sweep them with the tables as they are.
        self._by_partition = None
        self._due.clear()  # the sweep that follows re-evaluates everything
        data = self._objects.data
        await tables.restore(
            self.settings,
            self._objects.changelog,
            partitions,
            lambda records: tables.load(data, records),
            client_id=f"{self.settings.evaluate.app_id}-restore",
        )
        self._sweeps.put_nowait("assigned")

    def _revoked(self, partitions: set[int]) -> None:
        assert self.processor is not None  # set before the stream starts
        for partition in partitions:
            for key in self._keys_of(partition):
                self._objects.data.pop(key, None)
            self.processor.tally.forget(partition)
            self._tallied.discard(partition)
        self._by_partition = None
        # Whoever owns partition 0 after the rebalance publishes every scope again, whatever
        # its board last published: the last snapshots on the topic may be another worker's.
        self._publish_all = True

    def _take_changelog(self, records: Sequence[Any]) -> None:
        # Global tables' changelog records, applied to this worker's copy in log order.
        #
        # The copy must end as the log does: the last record of a key wins. This worker's own
        # writes are in its copy already, so its records are not applied again when they come
        # back (a later write of the key, made meanwhile, would show its older value for a
        # while). Another worker's record that comes back while one of this worker's writes
        # of the key is still on its way precedes that write in the log (a partition is read
        # in order), so it is not applied either: the write that follows it wins, as in the
        # log. Two workers write one key when a partition changes owner.
        for record in records:
            table = self._shared.get(record.topic)
            if table is not None:
                self._take_record(table, record)

    def _take_record(self, table: tables.Table, record: Any) -> None:
        slot = (record.topic, record.key)
        own = any(
            name == WRITER_HEADER and value == self._writer for name, value in record.headers or ()
        )
        data = table.data
        if own:
            pending = self._unconfirmed.get(slot)
            if pending is not None:
                pending[0] -= 1
                if pending[0] > 0:
                    return  # a later write of ours is on its way: the copy shows it
                del self._unconfirmed[slot]
                if data.get(record.key) == record.value:
                    return  # the copy shows this write
            # Not waited for (written before a restart, or forgotten): follow the log.
        elif (pending := self._unconfirmed.get(slot)) is not None:
            if time.monotonic() - pending[1] < UNCONFIRMED_S:
                return  # our write of the key follows it in the log
            del self._unconfirmed[slot]  # ours never came back (its transaction aborted)
        try:
            tables.load(data, (record,))
        except Exception:  # a record no worker writes: it must not stop the follower
            log.exception("skipped a changelog record", extra={"topic": record.topic})

    def _on_resources(self, records: Iterable[Any]) -> None:
        for record in records:
            self._on_resource(record)

    def _on_resource(self, message: Any) -> None:
        self.processed += 1
        if message.value is None:
            return  # a tombstone follows a delete for compaction; the delete itself was handled
        headers = _headers(message.headers)
        # Continue the trace that ingest started; a record that carries none starts none (a
        # root span per event would cost more than evaluating most objects, for no trace).
        for name, _ in headers:
            if name == "traceparent":
                with _tracer.start_as_current_span("evaluate", context=tracing.extract(headers)):
                    self._handle(message, headers)
                return
        self._handle(message, headers)

    def _handle(self, message: Any, headers: Sequence[tuple[str, bytes]]) -> None:
        assert self.processor is not None  # set before the stream starts
        try:
            lazy = processing.decode_lazily(headers, message.value, key=message.key)
            key = message.key
            raw = self._objects.data.get(key)
            loaded = processing.load_state(raw) if raw is not None else None
            namespace_obj = self._namespace(lazy.cluster, lazy.ref.namespace)
            views = self._inventory(lazy.cluster, lazy.ref)
            if loaded is not None and self.processor.unchanged(
                loaded, lazy, namespace_obj=namespace_obj, inventory=views
            ):
                # Nothing to store, publish or index (a resync, a status update): neither the
                # event's object nor the state's findings are decoded.
                return
            previous = loaded.state() if loaded is not None else None
            resource = lazy.complete()
            step = self.processor.on_resource(
                resource,
                previous=previous,
                partition=message.partition,
                namespace_obj=namespace_obj,
                inventory=views,
            )
        except codec.DecodeError as exc:
            self._dead_letter(message, exc.reason)
            return
        except Exception as exc:  # one poison record must not stop the stream
            log.exception("evaluation failed", extra={"key": message.key})
            self._dead_letter(message, f"evaluation failed: {type(exc).__name__}: {exc}")
            return
        if step.changed:
            scope = (resource.cluster, resource.ref.namespace)
            self._store(key, step.state, partition=message.partition, scope=scope)
        is_namespace = resource.ref.kind == "Namespace" and resource.ref.api_version == "v1"
        if is_namespace and step.changed:
            ns_key = processing.namespace_key(resource.cluster, resource.ref.name).encode()
            value = None if step.state is None else codec.canonical(resource.object)
            self._write(self._namespaces, ns_key, value, partition=message.partition)
        # An object whose content ingest saw unchanged (a resync, a status update) has the
        # entry it had: only a real change, or a delete, can move the inventory.
        unchanged = (
            previous is not None
            and bool(resource.digest)
            and previous.source_digest == resource.digest
            and resource.change is not resources.Change.DELETED
        )
        if self._kept_views and not unchanged:
            update = inventory.update_of(resource, table=self._entries, views=self._kept_views)
            if update is not None:
                self._on_inventory(update, partition=message.partition)
        for output in step.outputs:
            self._send(output, partition=message.partition)

    def _keys_of(self, partition: int) -> list[bytes]:
        """The objects table's keys of one source partition (O(keys), not O(table))."""
        if self._by_partition is None:
            index: dict[int, dict[tuple[str, str], dict[bytes, None]]] = {}
            for key, value in list(self._objects.data.items()):
                source, cluster, namespace = storing.scope_of(value)
                index.setdefault(source, {}).setdefault((cluster, namespace), {})[key] = None
            self._by_partition = index
        scopes = self._by_partition.get(partition, {})
        return [key for keys in scopes.values() for key in keys]

    async def _sweep(self, partition: int, *, generation: int) -> bool:
        # Whether the sweep went through: it stops when a rebalance begins (``generation``
        # is the consumer generation it started in), as the partition may be another
        # worker's by then, and the sweep after the rebalance covers everything.
        assert self.processor is not None  # set before the stream starts
        keys = self._keys_of(partition)
        swept = 0
        for key in keys:
            raw = self._objects.data.get(key)
            if raw is None:
                continue
            try:
                state = processing.decode_state(raw)
                self._refill(state, partition=partition)
                step = self._reevaluated(state)
            except Exception:  # one bad object must not stop the sweep
                log.exception("re-evaluation failed", extra={"key": key})
                continue
            self._apply(key, step, partition=partition)
            swept += 1
            if swept % SWEEP_YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if self._generation() != generation:
                    return False
        data = self._objects.data
        mine = [raw for key in self._keys_of(partition) if (raw := data.get(key)) is not None]
        self.processor.retally(map(processing.decode_state, mine), partition=partition)
        self._reconcile.add(partition)
        self._tallied.add(partition)
        self.readiness.report(f"partition-{partition}", ok=True, detail="swept", critical=False)
        return True

    def _reevaluated(self, state: processing.ObjectState) -> processing.Step:
        # A stored object brought up to the policy, its namespace and its inventory now.
        assert self.processor is not None  # set before the stream starts
        return self.processor.sweep(
            state,
            namespace_obj=self._namespace(state.cluster, state.ref.namespace),
            inventory=self._inventory(state.cluster, state.ref),
        )

    def _apply(self, key: bytes, step: processing.Step, *, partition: int) -> None:
        # A re-evaluation's result: the state it changed (never a deletion) and its outputs.
        state = step.state
        if step.changed and state is not None:
            scope = (state.cluster, state.ref.namespace)
            self._store(key, state, partition=partition, scope=scope)
        for output in step.outputs:
            self._send(output, partition=partition)

    def _refill(self, state: processing.ObjectState, *, partition: int) -> None:
        # A stored object whose inventory entry is missing (the table is new since an upgrade,
        # or the policy now needs a view nobody kept): add it, as its event would have.
        if not self._kept_views:
            return
        update = inventory.refill_of(
            state.cluster,
            state.ref,
            state.load_object,
            table=self._entries,
            views=self._kept_views,
        )
        if update is not None:
            self._on_inventory(update, partition=partition)

    def _store(
        self,
        key: bytes,
        state: processing.ObjectState | None,
        *,
        partition: int,
        scope: tuple[str, str],
    ) -> None:
        # ``scope``: the object's cluster and namespace, for the index of keys.
        value = None if state is None else processing.encode_state(state)
        self._write(self._objects, key, value, partition=partition)
        if self._by_partition is not None:
            scopes = self._by_partition.setdefault(partition, {})
            if value is not None:
                scopes.setdefault(scope, {})[key] = None
            elif (keys := scopes.get(scope)) is not None:
                keys.pop(key, None)
                if not keys:
                    del scopes[scope]

    def _write(
        self, table: tables.Table, key: bytes, value: bytes | None, *, partition: int
    ) -> None:
        # The copy in memory, and the changelog partition of the source partition, in that
        # partition's next transaction. ``None`` deletes the key. A partition this worker no
        # longer owns is written by its new owner: nothing changes here.
        writer = self._partition_writer(partition)
        if writer is None:
            return
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        headers: publishing.Headers = []
        if table.shared:
            headers.append((WRITER_HEADER, self._writer))
            self._unconfirm(table.changelog, key)
        writer.put(table.changelog, key=key, value=value, headers=headers, partition=partition)

    def _partition_writer(self, partition: int) -> transactions.PartitionWriter | None:
        return None if self._stream is None else self._stream.writers.get(partition)

    def _generation(self) -> int:
        return -1 if self._stream is None else self._stream.generation

    def _unconfirm(self, changelog: str, key: bytes) -> None:
        # One more write of ``key`` on its way back through ``changelog`` (``_take_changelog``).
        now = time.monotonic()
        pending = self._unconfirmed.get((changelog, key))
        if pending is not None:
            pending[0] += 1
            pending[1] = now
            return
        if len(self._unconfirmed) >= UNCONFIRMED_KEPT:
            # Bounded: writes whose records never came back (lost batches) are forgotten.
            self._unconfirmed = {
                slot: entry
                for slot, entry in self._unconfirmed.items()
                if now - entry[1] < UNCONFIRMED_S
            }
        self._unconfirmed[(changelog, key)] = [1, now]

    # -- cross-object checks ---------------------------------------------------------------

    def _inventory(self, cluster: str, ref: Any) -> dict[str, Any] | None:
        assert self.processor is not None  # set before the stream starts
        views = self.processor.needs_inventory(ref)
        if not views or not views <= self._kept_views:
            return None  # nearly every kind: no cross-object check, nothing to assemble
        table = self._entries
        scope = inventory.scope_of(ref)
        versions = table.versions_of(cluster, scope, sorted(views))
        cached = self._inventories.get((cluster, scope, views))
        if cached is not None and cached[0] == versions:
            return cached[1]  # the same object as last time: the processor knows its digest
        assembled = inventory.assemble(
            table,
            cluster=cluster,
            namespace=scope,
            views=sorted(views),
            parsed=self._parsed_entries,
        )
        if len(self._inventories) >= INVENTORIES_CACHED:
            self._inventories.clear()
        self._inventories[(cluster, scope, views)] = (versions, assembled)
        return assembled

    def _on_inventory(self, update: inventory.Update, *, partition: int) -> None:
        # This worker's own change: keep the global table current, then re-evaluate the
        # concerned objects of the partitions this worker owns. Every other worker does the
        # same for its own partitions when the changelog brings it the change
        # (``_follow_inventory``), so each object is re-evaluated by its owner against a
        # copy that shows the change.
        before = self._surroundings_before(update, stored=self._entries.get(update.key))
        self._writing = True
        try:
            self._write(self._inventory_table, update.key, update.value, partition=partition)
        finally:
            self._writing = False
        self._concerned(update, before)

    def _follow_inventory(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        # Another worker's change, which this worker's copy is about to take in from the
        # changelog (the table still shows ``old``). Its concerned objects are worked out
        # once the change (or the whole fetched changelog chunk) is in place. Without a key index
        # yet, a sweep is due that evaluates every object against the table as it is then.
        if self._writing or self._by_partition is None:
            return
        update = inventory.change_of(key, old, new, table=self._entries)
        if update is None:
            return
        self._changed_entries.append((update, self._surroundings_before(update, stored=old)))
        self._schedule_follow()

    def _surroundings_before(
        self, update: inventory.Update, *, stored: bytes | None
    ) -> dict[str, tracking.Surroundings]:
        # The surroundings (for priority) of the namespaces ``update`` may change, before it.
        table = self._entries
        scopes = inventory.exposure_scopes(
            update, stored=stored, table=table, parsed=self._parsed_entries
        )
        return {ns: self._surroundings_of(update.cluster, ns) for ns in scopes}

    def _concerned(self, update: inventory.Update, before: Mapping[str, Any]) -> None:
        # After ``update`` is in the table: queue this worker's objects that it concerns for
        # re-evaluation: those whose cross-object checks read the entry, and the pods and pod
        # templates whose priority it moved.
        table = self._entries
        targets = self._keys_of_targets(update.cluster, update.targets) if update.targets else set()
        exposed: set[bytes] = set()
        for ns, old in before.items():
            new = self._surroundings_of(update.cluster, ns)
            if new == old:
                continue
            # Only the accounts whose privilege changed, unless the exposing Services did.
            accounts = None if new.selectors != old.selectors else new.privileged ^ old.privileged
            exposed |= inventory.pod_keys(
                table, update.cluster, ns, accounts=accounts, parsed=self._parsed_entries
            )
        self._queue(targets, priority_only=False)
        self._queue(exposed - targets, priority_only=True)

    def _queue(self, keys: Iterable[bytes], *, priority_only: bool) -> None:
        # Objects to re-evaluate soon; one queued for its checks stays so. Keys this worker
        # does not own (another worker's objects, or a standby copy's) are dropped then.
        due = self._due
        for key in keys:
            due[key] = priority_only and due.get(key, True)
        if due:
            self._due_signal.set()

    def _keys_of_targets(self, cluster: str, targets: Iterable[inventory.Target]) -> set[bytes]:
        """The resources keys (``<cluster>/<uid>``) of the objects ``targets`` name.

        An object not seen yet is not named: its own first event will read the table.
        """
        keys: set[bytes] = set()
        table = self._entries
        for kind, namespace, name in inventory.expand(
            table, cluster, targets, parsed=self._parsed_entries
        ):
            if kind == "Namespace":
                metadata = (self._namespace(cluster, name) or {}).get("metadata") or {}
                if metadata.get("uid"):
                    keys.add(f"{cluster}/{metadata['uid']}".encode())
                continue
            if kind != "ServiceAccount":
                continue
            namespaces = table.namespaces_of(cluster) if namespace == inventory.ANY else [namespace]
            for ns in namespaces:
                for key in table.keys_of(cluster, ns, inventory.SERVICE_ACCOUNTS):
                    entry = inventory.parsed_entry(table[key], self._parsed_entries)
                    if name in (inventory.ANY, entry["metadata"]["name"]):
                        uid = key.decode().rsplit("/", 1)[1]
                        keys.add(f"{cluster}/{uid}".encode())
        return keys

    def _surroundings_of(self, cluster: str, namespace: str) -> tracking.Surroundings:
        """A namespace's ``tracking.Surroundings``, kept until its entries change."""
        table = self._entries
        versions = table.versions_of(cluster, namespace, inventory.SURROUNDING_VIEWS)
        cached = self._surroundings.get((cluster, namespace))
        if cached is not None and cached[0] == versions:
            return cached[1]
        found = inventory.surroundings_of(table, cluster, namespace, parsed=self._parsed_entries)
        if len(self._surroundings) >= INVENTORIES_CACHED:
            self._surroundings.clear()
        self._surroundings[(cluster, namespace)] = (versions, found)
        return found

    @property
    def _entries(self) -> inventory.Indexed:
        """The inventory table's data, indexed by cluster, namespace and view."""
        return cast(inventory.Indexed, self._inventory_table.data)

    async def _reevaluate(self) -> None:
        # Works off ``_due`` between two batches of records (which queue while it waits), so
        # an object concerned by many changes meanwhile is re-evaluated once, against the
        # table as it is then. Each object is re-evaluated by the worker that owns its
        # partition, which writes its state to that partition's changelog.
        while True:
            await self._due_signal.wait()
            self._due_signal.clear()
            due, self._due = self._due, {}
            owned = self._owned()
            for done, (key, priority_only) in enumerate(due.items(), start=1):
                raw = self._objects.data.get(key)
                if raw is None:
                    continue  # deleted since, or never seen: nothing stored to re-evaluate
                try:
                    state = processing.decode_state(raw)
                    if state.partition not in owned or (priority_only and not state.open):
                        continue  # another worker's now, or no finding whose priority could move
                    step = self._reevaluated(state)
                except Exception:  # one bad object must not stop the others
                    log.exception("re-evaluation failed", extra={"key": key})
                    continue
                self._apply(key, step, partition=state.partition)
                if done % SWEEP_YIELD_EVERY == 0:
                    self._touched()
                    await asyncio.sleep(0)
                    owned = self._owned()  # a rebalance may have begun meanwhile
            self._touched()

    def _follow_namespace(self, key: bytes, old: Any, new: Any) -> None:
        # A namespace object changed in this worker's copy (its own write, or another
        # worker's through the changelog): its labels decide namespaceSelector matches, and
        # with its annotations owners and criticality. Re-evaluate this worker's objects in it
        # once the change (or the whole fetched changelog chunk) is in place. Without an index
        # yet, a sweep is due that evaluates every object with the table as it is then.
        if self._by_partition is None or _namespace_facts(old) == _namespace_facts(new):
            return  # no sweep due, and nothing its objects read changed (most edits: annotations)
        self._changed_namespaces.add(key)
        self._schedule_follow()

    def _schedule_follow(self) -> None:
        # The listeners run inside a table write: the rest waits for the next turn of the
        # loop, when the change (or the whole fetched changelog chunk) is in place.
        if not self._follow_scheduled:
            self._follow_scheduled = True
            asyncio.get_running_loop().call_soon(self._after_changes)

    def _after_changes(self) -> None:
        self._follow_scheduled = False
        namespaces, self._changed_namespaces = self._changed_namespaces, set()
        entries, self._changed_entries = self._changed_entries, []
        index = self._by_partition
        if index is None:
            return  # a rebalance began: its sweep evaluates everything
        for update, before in entries:
            self._concerned(update, before)
        owned = self._owned()
        for ns_key in sorted(namespaces):
            cluster, _, namespace = ns_key.decode().rpartition("/")
            keys = {
                key
                for partition, scopes in index.items()
                if partition in owned
                for key in scopes.get((cluster, namespace), ())
            }
            self._queue(keys, priority_only=False)

    def _namespace(self, cluster: str, namespace: str) -> Mapping[str, Any] | None:
        if not namespace:
            return None
        ns_key = processing.namespace_key(cluster, namespace).encode()
        raw = self._namespaces.data.get(ns_key)
        if raw is None:
            return None
        cached = self._parsed_namespaces.get(ns_key)
        if cached is not None and cached[0] is raw:
            return cached[1]  # the same stored value: parsed already
        loaded: Mapping[str, Any] = orjson.loads(raw)
        if len(self._parsed_namespaces) >= NAMESPACES_CACHED:
            self._parsed_namespaces.clear()
        self._parsed_namespaces[ns_key] = (raw, loaded)
        return loaded

    def _send(self, output: processing.Output, *, partition: int | None = None) -> None:
        # The outputs of a source partition's records go in that partition's transaction,
        # with its offsets; what belongs to no partition (posture snapshots, the dead letters
        # of policy records) goes through the plain idempotent producer.
        assert self._publisher is not None  # set before anything is sent
        topic = self._names[output.topic]
        key = output.key.encode()
        headers = kafka.record_headers(output.event)
        if partition is None:
            self._publisher.put(topic, key=key, value=output.event.data, headers=headers)
            return
        writer = self._partition_writer(partition)
        if writer is None:
            return  # the partition moved on: its new owner publishes what it finds
        writer.put(
            topic,
            key=key,
            value=output.event.data,
            headers=headers,
            partition=self._publisher.partition_for(topic, key),
        )

    def _dead_letter(self, message: Any, reason: str) -> None:
        output = processing.dead_letter(
            reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=dict(_headers(message.headers)),
            now=self.clock(),
        )
        self._send(output, partition=message.partition)

    # -- policy ----------------------------------------------------------------------------

    def _on_policy(self, built: policy_store.PolicySet) -> None:
        assert self.processor is not None  # set before the stream starts
        self.processor.policy = built
        self._kept_views = inventory.kept_views(built.engine.inventory_views)
        self._sweeps.put_nowait("policy")

    # -- posture ---------------------------------------------------------------------------

    def _posture(self, only_changed: bool) -> list[processing.Output]:
        # Each worker writes its partitions' shares; the owner of partition 0 adds up every
        # partition's (the table holds them all) and publishes the scopes that changed. So the
        # posture is whole however many workers share the partitions.
        # A worker tells only the shares of partitions it owns and has tallied from the table
        # since they were assigned: a share told from a partial tally would stay until it
        # changed. A previous owner cannot tell one any more: its writer is fenced.
        assert self.processor is not None  # set before the stream starts
        owned = self._owned() & self._tallied
        tally = self.processor.tally
        for partition, where, counts in tally.shares(owned):
            key = tallying.share_key(partition, where)
            value = None if counts is None else tallying.encode_counts(counts)
            self._write(self._shares, key, value, partition=partition)
        for partition in self._reconcile & owned:
            # Rebuilt from the table: shares this worker no longer has (left by an earlier
            # run or owner, under another policy) are not this partition's any more.
            current = tally.scopes_of(partition)
            for key in list(self._shares.data):
                parsed = tallying.parse_share_key(key)
                if parsed is not None and parsed[0] == partition and parsed[1] not in current:
                    self._write(self._shares, key, None, partition=partition)
        self._reconcile.clear()
        self._touched()
        if 0 not in owned:
            return []
        shares = cast(tallying.Shares, self._shares.data)
        only_changed, self._publish_all = only_changed and not self._publish_all, False
        return processing.posture_outputs(
            self._board.snapshots(shares, now=self.clock(), only_changed=only_changed)
        )

    def _owned(self) -> set[int]:
        return set() if self._stream is None else self._stream.owned

    def _touched(self) -> None:
        # Work put outside the stream's handler (sweeps, re-evaluations, shares): commit soon.
        if self._stream is not None:
            self._stream.touched()

    # -- periodic work ---------------------------------------------------------------------

    async def _run_sweeps(self) -> None:
        while True:
            reason = await self._sweeps.get()
            while not self._sweeps.empty():
                self._sweeps.get_nowait()  # several requests in a row: one sweep covers them
            # The generation can only move while a sweep awaits, and ``_sweep`` checks it then.
            generation = self._generation()
            for partition in sorted(self._owned()):
                swept = await self._sweep(partition, generation=generation)
                self._touched()
                if not swept:
                    break  # a rebalance began: the sweep after it covers everything
                log.debug("partition swept", extra={"partition": partition, "reason": reason})


class _Handler:
    """The app as the stream's ``consuming.Handler``."""

    def __init__(self, app: EvaluateApp) -> None:
        self.app = app

    async def assigned(self, partitions: set[int]) -> None:
        await self.app._assigned(partitions)

    def revoked(self, partitions: set[int]) -> None:
        self.app._revoked(partitions)

    def handle(self, records: Sequence[Any], writer: transactions.PartitionWriter) -> None:
        self.app._on_resources(records)


def _namespace_facts(raw: bytes | None) -> tuple[object, ...] | None:
    # What the objects in a namespace read of its object: its labels (namespaceSelector
    # matches, criticality, owner) and its owner annotations. ``None``: no namespace object.
    if raw is None:
        return None
    try:
        metadata = orjson.loads(raw).get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        owners = {key: annotations[key] for key in tracking.OWNER_KEYS if key in annotations}
        return sorted(labels.items()), sorted(owners.items())
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return (raw,)  # not an object with mappings: compared as it is


def _guarded(follow: watched_dict.Listener, what: str) -> watched_dict.Listener:
    # A table listener runs inside the changelog apply or the stream's own write: an
    # error must not escape there (the next sweep corrects what was missed).
    def listener(key: bytes, old: Any, new: Any) -> None:
        try:
            follow(key, old, new)
        except Exception:
            log.exception("%s could not be followed", what, extra={"key": key})

    return listener


def _headers(headers: Any) -> Sequence[tuple[str, bytes]]:
    if headers is None:
        return []
    if type(headers) in {list, tuple}:
        return cast("Sequence[tuple[str, bytes]]", headers)  # aiokafka's (str, bytes) pairs
    if isinstance(headers, Mapping):
        return list(headers.items())
    return [(str(k), bytes(v)) for k, v in headers]
