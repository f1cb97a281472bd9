"""The evaluate service: a faust-streaming app around ``processing.Processor``.

Data flow: the ``resources`` topic's records reach ``_on_resources`` in batches, straight from
faust's fetch loop (``batching``: faust's per-record agent path costs more CPU than evaluating).
Each CloudEvent is decoded, the object is evaluated against the policy in force, its state
(content digest, open findings, the object itself) is stored in the ``objects`` table and the
resulting transitions are published to ``findings``. Namespace objects also go to the
``namespaces`` global table, which every worker reads in full, so namespaceSelector matches,
owners and criticality can see them; when a namespace object changes in a worker's copy (its
own write, or another worker's through the changelog), that worker re-evaluates its objects
in the namespace. The kinds that cross-object checks and priority read
(NetworkPolicies, RBAC objects, ServiceAccounts, Services, Ingresses, Pods and workloads) go,
reduced, to the ``inventory`` global table (``inventory``); a change there queues the objects
whose checks or priority it concerns for re-evaluation. Each worker does this for its own
partitions only, for its own changes at once and for other workers' when the changelog brings
them to its copy: an object is re-evaluated by its owner against a copy that shows the change.
The queue is worked off between two batches of records (``_reevaluate``), each object once
however many changes concerned it meanwhile, from the table as it is then. It is not durable
and need not be: every partition assignment (a restart, a rebalance) sweeps all the objects.
Records that cannot be decoded or evaluated go to the ``dlq`` topic with the reason, and the
stream goes on.

The global tables' changelog records reach each worker through the same fetch loop: past
recovery, ``_take_changelog`` applies other workers' records to the worker's copy and skips its
own (named by a header), which its copy shows already; faust's per-record changelog path costs
several times more, and applying a worker's own record again could show an older value of
the key for a while when a later write of it was still on its way back. Another worker's
record that comes back while one of the worker's own writes of the key is on its way is
skipped too: it precedes that write in the log. So the copy ends as the log does.

Posture: each worker writes its partitions' shares of every scope to the ``posture-shares``
global table; the owner of partition 0 adds them up and publishes the snapshots
(``_posture``), so the counts are whole however many workers share the partitions. A worker
writes a partition's shares only once it has rebuilt the partition's tally from the table
after its assignment, and none while a rebalance is under way; after each rebalance, the
owner of partition 0 publishes every scope again, since the last snapshots on the topic may
be another worker's.

Outputs and ``objects`` changelog records go through one ``publishing.Publisher`` (batched,
acks=all), flushed by faust's commit before it commits offsets. The table is written to its
store and changelog directly, to the partition of the record being processed, as faust would
(faust's own path costs a pending message, a future and sensors per write).

Policy: ``following.PolicyFollower`` reads the compacted ``baselines`` topic before the worker
starts consuming resources and then continuously. A change swaps the compiled policy and
*sweeps* the worker's partitions: ``_run_sweeps`` re-evaluates every object of each partition
the worker owns from the table, in the worker's own task (the table is written directly, to
the changelog partition of each object). The same sweep runs once changelog recovery has
completed after each partition assignment (faust's ``on_rebalance_complete``) and when an
exception expires. A sweep stops when a rebalance begins: the one after it covers everything.
(Sweeps used to go through an internal topic and a faust agent. After a rebalance under
load, that agent could miss the sweep records, and the worker then ignored changelog changes
until the next policy change.)

faust is imported here only. ``EvaluateApp.start`` runs the faust app inside the caller's
asyncio loop (``await app.start()``, no faust Worker and no ``app.main()``), so tests and
``kposture run`` host it like any other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import faust
import orjson

from kposture.evaluate import (
    batching,
    following,
    inventory,
    periodic,
    policy_store,
    posture,
    processing,
    publishing,
    storing,
    tracking,
    watched,
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


class EvaluateApp:
    """One evaluate worker: the faust app, the policy follower and the periodic tasks."""

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
        self._faust: Any = None
        self._producer: Any = None
        self._publisher: publishing.Publisher | None = None
        self._follower: following.PolicyFollower | None = None
        # The tables, read and written directly (see ``_Direct``); set when faust is built.
        self._objects: _Direct = _Direct.none()
        self._namespaces: _Direct = _Direct.none()
        self._parsed_namespaces: dict[bytes, tuple[bytes, Mapping[str, Any]]] = {}
        # Every cluster's inventory entries; ``_entries`` is its indexed data.
        self._inventory_table: _Direct = _Direct.none(inventory.Indexed)
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
        self._shares: _Direct = _Direct.none(posture.Shares)
        self._board = posture.Board()
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
        self._shared: dict[str, _Direct] = {}  # the global tables, by changelog topic
        self.processed = 0
        """Resource records handled so far (evaluated, skipped or dead-lettered)."""

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the policy, then start consuming; returns once partitions are assigned."""
        await kafka.create_topics(self.settings.kafka)
        self._producer = kafka.producer(
            self.settings.kafka,
            client_id=f"{self.settings.evaluate.app_id}-publisher",
            linger_ms=int(PRODUCER_LINGER_S * 1000),
        )
        await self._producer.start()
        self._publisher = publishing.Publisher(self._producer, linger_s=PRODUCER_LINGER_S)
        await self._publisher.prepare(
            self._names[t] for t in (topics.Topic.FINDINGS, topics.Topic.POSTURE, topics.Topic.DLQ)
        )
        self._follower = following.PolicyFollower(
            self.settings,
            self.store,
            clock=self.clock,
            readiness=self.readiness,
            dead_letter=self._send,
        )
        self.processor = processing.Processor(await self._follower.start(), clock=self.clock)
        self.processor.surroundings = self._surroundings_of
        self._kept_views = inventory.kept_views(self.processor.policy.engine.inventory_views)
        self._faust = self._build_faust()
        await self._faust.start()
        self.readiness.report("kafka", ok=True, detail="faust app started")
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

    async def stop(self) -> None:
        """Stop the tasks and the faust app (which commits offsets and flushes changelogs)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._faust is not None:
            await self._faust.stop()  # commits, which flushes the publisher
        if self._publisher is not None:
            await self._publisher.flush()
        if self._producer is not None:
            await self._producer.stop()
        if self._follower is not None:
            await self._follower.stop()
        self.readiness.report("kafka", ok=False, detail="stopped")

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

    # -- faust -----------------------------------------------------------------------------

    def _build_faust(self) -> Any:
        kafka_settings = self.settings.kafka
        evaluate = self.settings.evaluate
        partitions = kafka_settings.partitions
        app: Any = faust.App(
            evaluate.app_id,
            broker=[f"kafka://{host}" for host in kafka_settings.bootstrap_servers.split(",")],
            store="memory://",
            datadir=evaluate.data_dir,
            topic_partitions=partitions,
            topic_replication_factor=kafka_settings.replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,  # faust's producer now carries only sweeps and namespaces
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            stream_wait_empty=False,
        )

        def topic(name: str, **extra: Any) -> Any:
            return app.topic(name, key_type=bytes, value_type=bytes, **extra)

        def global_table(name: str) -> Any:
            # Another worker's writes reach this one through the changelog. faust assigns
            # every changelog partition of a global table as active, so it buffers their
            # records until ``recovery_buffer_size`` piled up (1,000 by default) even after
            # recovery: a quiet table would not show another worker's writes for hours.
            # Apply each record as it comes.
            return app.GlobalTable(
                name,
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                recovery_buffer_size=1,
            )

        resources = topic(self._names[topics.Topic.RESOURCES])
        objects = app.Table("objects", partitions=partitions, key_type=bytes, value_type=bytes)
        self._objects = _Direct.of(objects)
        self._namespaces = _Direct.of(global_table("namespaces"), data=watched.Watched, shared=True)
        namespaces = cast(watched.Watched, self._namespaces.data)
        namespaces.listener = _guarded(self._follow_namespace, "a namespace change")
        # What cross-object checks read arrives on any partition, so every worker keeps all
        # of it (reduced to ``inventory`` entries, indexed by cluster, namespace and view).
        self._inventory_table = _Direct.of(
            global_table("inventory"), data=inventory.Indexed, shared=True
        )
        self._entries.listener = _guarded(self._follow_inventory, "an inventory change")
        self._changed_entries.clear()
        self._changed_namespaces.clear()
        self._shares = _Direct.of(global_table("posture-shares"), data=posture.Shares, shared=True)
        self._shared = {
            table.changelog: table
            for table in (self._namespaces, self._inventory_table, self._shares)
        }
        self._inventories.clear()

        async def evaluate_resources(stream: Any) -> None:
            # Subscribes the resources topic (and co-partitions the tables with it); its
            # records reach ``_on_resources`` through ``batching`` and never this stream.
            async for event in stream.events():
                self._on_resource(event.message)

        # Registered by call, not as decorators: faust's decorators are untyped.
        app.agent(resources, name="evaluate-resources")(evaluate_resources)

        async def assigned(sender: Any, assigned: Iterable[Any], **_: Any) -> None:
            self._by_partition = None  # recovery is about to write the table behind our back
            self._due.clear()  # the sweep that follows re-evaluates everything
            mine = {tp.partition for tp in assigned if tp.topic == resources.get_topic_name()}
            self.readiness.report("partitions", ok=True, detail=f"{len(mine)} assigned")

        async def recovered(sender: Any, **_: Any) -> None:
            # The tables hold what the changelogs say: sweep the partitions this worker owns.
            self._sweeps.put_nowait("assigned")

        async def revoked(sender: Any, revoked: Iterable[Any], **_: Any) -> None:
            assert self.processor is not None  # set before faust starts
            self._by_partition = None
            for tp in revoked:
                if tp.topic == resources.get_topic_name():
                    self.processor.tally.forget(tp.partition)
                    self._tallied.discard(tp.partition)
            # Whoever owns partition 0 after the rebalance publishes every scope again, whatever
            # its board last published: the last snapshots on the topic may be another worker's.
            self._publish_all = True

        app.on_partitions_assigned.connect(assigned)
        app.on_rebalance_complete.connect(recovered)
        app.on_partitions_revoked.connect(revoked)
        _flush_before_commit(app, self._publisher)
        _guard_recovery(app.tables.recovery, self.readiness)
        assert self._publisher is not None  # created before faust
        batching.install(
            app.consumer,
            topic=resources.get_topic_name(),
            handle=self._on_resources,
            take=self._take_changelog,
            pace=self._publisher.wait_room,
        )
        return app

    def _take_changelog(self, message: Any) -> bool:
        # A global table's changelog record once recovery is over: applied to this worker's
        # copy here, as faust's recovery would (to the store's data, so the listeners see it)
        # but without its queue, event and tasks per record. During recovery, or while faust
        # still holds records it has not applied, faust applies them all, in order.
        #
        # The copy must end as the log does: the last record of a key wins. This worker's own
        # writes are in its copy already, so its records are not applied again when they come
        # back (a later write of the key, made meanwhile, would show its older value for a
        # while). Another worker's record that comes back while one of this worker's writes
        # of the key is still on its way precedes that write in the log (a partition is read
        # in order), so it is not applied either: the write that follows it wins, as in the
        # log. Two workers write one key when a partition changes owner.
        table = self._shared.get(message.topic)
        if table is None:
            return False
        recovery = self._faust.tables.recovery
        tp = message.tp
        seen = recovery.active_offsets.get(tp)
        if seen is not None and message.offset <= seen:
            return True  # read already
        slot = (message.topic, message.key)
        own = any(
            name == WRITER_HEADER and value == self._writer for name, value in message.headers or ()
        )
        latest = True  # for an own record: no later write of the key is on its way
        if own and (pending := self._unconfirmed.get(slot)) is not None:
            pending[0] -= 1
            if pending[0] > 0:
                latest = False
            else:
                del self._unconfirmed[slot]
        if (
            recovery.in_recovery
            or tp not in recovery.active_tps
            or not self._faust.tables.changelog_queue.empty()
        ):
            return False
        recovery.active_offsets[tp] = message.offset  # where a later recovery goes on from
        data = table.data
        if own:
            if not latest or data.get(message.key) == message.value:
                return True  # the copy shows this write, or a later one of ours
            # faust applied an older record meanwhile (during a recovery): take ours again
        elif (pending := self._unconfirmed.get(slot)) is not None:
            if time.monotonic() - pending[1] < UNCONFIRMED_S:
                return True  # our write of the key follows it in the log
            del self._unconfirmed[slot]  # ours never came back (the batch was lost): follow
        try:
            if message.value is None:
                data.pop(message.key, None)
            else:
                data[message.key] = message.value
        except Exception:  # a record no worker writes: it must not stop the fetch loop
            log.exception("skipped a changelog record", extra={"topic": message.topic})
        return True

    def _on_resources(self, messages: Iterable[Any]) -> None:
        for message in messages:
            self._on_resource(message)

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
        assert self.processor is not None  # set before faust starts
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
            self._send(output)

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
        assert self.processor is not None  # set before faust starts
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
                if self._faust.consumer_generation_id != generation:
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
        assert self.processor is not None  # set before faust starts
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
            self._send(output)

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

    def _write(self, table: _Direct, key: bytes, value: bytes | None, *, partition: int) -> None:
        # What faust's ``Table.__setitem__`` does from inside a stream (which the batched
        # resources records are not), minus its per-write future and sensors: the local store,
        # and the changelog partition of the record being processed, which recovery (or, for
        # a global table, every worker) reads back. ``None`` deletes the key.
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        assert self._publisher is not None  # set before faust starts
        headers: publishing.Headers = []
        if table.shared:
            headers.append((WRITER_HEADER, self._writer))
            self._unconfirm(table.changelog, key)
        self._publisher.put(
            table.changelog, key=key, value=value, headers=headers, partition=partition
        )

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
        assert self.processor is not None  # set before faust starts
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
        # once the change (or faust's whole changelog batch) is in place. Without a key index
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
        """The inventory table's data (``_Direct.of`` made it an ``inventory.Indexed``)."""
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
                    await asyncio.sleep(0)
                    owned = self._owned()  # a rebalance may have begun meanwhile

    def _follow_namespace(self, key: bytes, old: Any, new: Any) -> None:
        # A namespace object changed in this worker's copy (its own write, or another
        # worker's through the changelog): its labels decide namespaceSelector matches, and
        # with its annotations owners and criticality. Re-evaluate this worker's objects in it
        # once the change (or faust's whole changelog batch) is in place. Without an index
        # yet, a sweep is due that evaluates every object with the table as it is then.
        if self._by_partition is None or _namespace_facts(old) == _namespace_facts(new):
            return  # no sweep due, and nothing its objects read changed (most edits: annotations)
        self._changed_namespaces.add(key)
        self._schedule_follow()

    def _schedule_follow(self) -> None:
        # The listeners run inside a table write: the rest waits for the next turn of the
        # loop, when the change (or faust's whole changelog batch) is in place.
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

    def _send(self, output: processing.Output) -> None:
        # The publisher is flushed before faust commits the consumed offsets, so a record is
        # consumed "done" only once its outputs were acknowledged (at least once).
        assert self._publisher is not None  # set before anything is sent
        self._publisher.put(
            self._names[output.topic],
            key=output.key.encode(),
            value=output.event.data,
            headers=kafka.record_headers(output.event),
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
        self._send(output)

    # -- policy ----------------------------------------------------------------------------

    def _on_policy(self, built: policy_store.PolicySet) -> None:
        assert self.processor is not None  # set before faust starts
        self.processor.policy = built
        self._kept_views = inventory.kept_views(built.engine.inventory_views)
        self._sweeps.put_nowait("policy")

    # -- posture ---------------------------------------------------------------------------

    def _posture(self, only_changed: bool) -> list[processing.Output]:
        # Each worker writes its partitions' shares; the owner of partition 0 adds up every
        # partition's (the table holds them all) and publishes the scopes that changed. So the
        # posture is whole however many workers share the partitions.
        # A worker tells only the shares of partitions it owns and has tallied from the table
        # since they were assigned, and nothing while a rebalance is under way: a share told
        # from a partial tally, or by a partition's previous owner, could land after its new
        # owner's, and the owner would not tell it again until it changed.
        assert self.processor is not None  # set before faust starts
        if self._faust.rebalancing:
            return []
        owned = self._owned() & self._tallied
        tally = self.processor.tally
        for partition, where, counts in tally.shares(owned):
            key = posture.share_key(partition, where)
            value = None if counts is None else posture.encode_counts(counts)
            self._write(self._shares, key, value, partition=partition)
        for partition in self._reconcile & owned:
            # Rebuilt from the table: shares this worker no longer has (left by an earlier
            # run or owner, under another policy) are not this partition's any more.
            current = tally.scopes_of(partition)
            for key in list(self._shares.data):
                parsed = posture.parse_share_key(key)
                if parsed is not None and parsed[0] == partition and parsed[1] not in current:
                    self._write(self._shares, key, None, partition=partition)
        self._reconcile.clear()
        if 0 not in owned:
            return []
        shares = cast(posture.Shares, self._shares.data)  # made so by ``_Direct.of``
        only_changed, self._publish_all = only_changed and not self._publish_all, False
        return processing.posture_outputs(
            self._board.snapshots(shares, now=self.clock(), only_changed=only_changed)
        )

    def _owned(self) -> set[int]:
        resources = self._names[topics.Topic.RESOURCES]
        if self._faust is None:
            return set()
        return {
            tp.partition for tp in self._faust.assignor.assigned_actives() if tp.topic == resources
        }

    # -- periodic work ---------------------------------------------------------------------

    async def _run_sweeps(self) -> None:
        while True:
            reason = await self._sweeps.get()
            while not self._sweeps.empty():
                self._sweeps.get_nowait()  # several requests in a row: one sweep covers them
            # The generation can only move while a sweep awaits, and ``_sweep`` checks it then.
            generation = self._faust.consumer_generation_id
            for partition in sorted(self._owned()):
                if not await self._sweep(partition, generation=generation):
                    break  # a rebalance began: the sweep after it covers everything
                log.debug("partition swept", extra={"partition": partition, "reason": reason})


def _flush_before_commit(app: Any, publisher: publishing.Publisher | None) -> None:
    # faust commits consumed offsets only after ``await app.producer.flush()``; flushing the
    # publisher there too means an offset is committed only once the outputs of the records
    # before it were acknowledged, as when everything went through faust's producer.
    assert publisher is not None  # created before faust
    producer = app.producer
    flush_faust = producer.flush

    async def flush() -> None:
        await publisher.flush()
        await flush_faust()

    producer.flush = flush


def _guard_recovery(recovery: Any, readiness: health.Readiness) -> None:
    # faust's table recovery seeks every changelog partition it recovers to the offset it
    # worked out for it. When a rebalance ends while a recovery is between those two steps
    # (workers joining and leaving in quick succession), the new partitions have no offset yet
    # and the seek raises, which ends faust's recovery service for good: the worker then
    # consumes nothing more and says nothing. Those partitions are left out of the seek; the
    # recovery sees the new rebalance right after it and starts over, offsets included.
    # Should the recovery service end anyway, the worker reports itself not ready.
    seek = recovery._seek_offsets
    crash = recovery.crash

    async def seek_known(consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        known = {tp for tp in tps if offsets.get(tp) is not None}
        await seek(consumer, known, offsets, title)

    async def crashed(reason: BaseException) -> None:
        readiness.report("kafka", ok=False, detail=f"table recovery failed: {reason!r}")
        await crash(reason)

    recovery._seek_offsets = seek_known
    recovery.crash = crashed


@dataclasses.dataclass(frozen=True)
class _Direct:
    """A faust table that the app reads and writes itself: its store's data and changelog."""

    data: Any
    changelog: str
    shared: bool = False  # a global table: every worker keeps all of it

    @classmethod
    def of(
        cls,
        table: Any,
        *,
        data: Callable[[dict[bytes, Any]], dict[bytes, Any]] | None = None,
        shared: bool = False,
    ) -> _Direct:
        # The memory store keeps a plain dict: using it directly skips two Python-level
        # mapping layers per event (any other store is used through its mapping interface).
        # ``data`` swaps that dict for an indexed one (``watched.Watched``), which faust then
        # writes too, so the indexes see every write.
        store = table.data
        inner = getattr(store, "data", None)
        if data is not None:
            if not isinstance(inner, dict):
                raise TypeError(f"table {table.name!r} is not kept in memory: it cannot be indexed")
            inner = store.data = data(inner)
        return cls(
            inner if isinstance(inner, dict) else store,
            table.changelog_topic.get_topic_name(),
            shared,
        )

    @classmethod
    def none(cls, data: Callable[[], dict[bytes, Any]] = dict) -> _Direct:
        """Before faust is built: an empty table (of the kind ``of`` will give) with no
        changelog."""
        return cls(data(), "")


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


def _guarded(follow: watched.Listener, what: str) -> watched.Listener:
    # A table listener runs inside faust's changelog apply or the stream's own write: an
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
