"""The evaluate service: a faust-streaming app around ``processing.Processor``.

Data flow: the ``resources`` topic feeds one agent that decodes each CloudEvent, evaluates the
object against the policy in force, stores the object's state (content digest, open findings,
the object itself) in the ``objects`` table and publishes the resulting transitions to
``findings``. Namespace objects also go to the ``namespaces`` global table, which every worker
reads in full, so namespaceSelector matches, owners and criticality can see them. Records that
cannot be decoded or evaluated go to the ``dlq`` topic with the reason, and the stream goes on.

Policy: every worker reads the whole compacted ``baselines`` topic with a plain consumer (no
consumer group: a single-partition topic would otherwise reach only one worker), before it
starts consuming resources and then continuously. A change swaps the compiled policy and
*sweeps* the worker's partitions: a control record per partition on an internal topic
co-partitioned with ``resources``, whose agent re-evaluates that partition's objects from the
table. The sweep goes through a topic because faust only lets a stream event write a table
(the event's partition says which changelog partition the write belongs to). The same sweep
runs on every partition assignment (after changelog recovery) and when an exception expires.

faust is imported here only. ``EvaluateApp.start`` runs the faust app inside the caller's
asyncio loop (``await app.start()``, no faust Worker and no ``app.main()``), so tests and
``kposture run`` host it like any other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import faust
import orjson

from kposture.evaluate import policy_store, processing, tracking
from kposture.runtime import health, kafka, tracing
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, common, envelope, policy, topics

log = logging.getLogger(__name__)
_tracer = tracing.tracer(__name__)

POSTURE_TICK_S = 1.0
"""How often changed posture is published (the debounce of "on change")."""
EXPIRY_POLL_S = 5.0
"""Longest sleep between checks for an exception that expired or a policy change."""
PRODUCER_LINGER_S = 0.005
"""How long the producer waits to fill a batch (as ``runtime.kafka.producer``'s 5 ms)."""
PRODUCER_BATCH_BYTES = 512 * 1024
"""Largest producer batch per partition (Kafka's default request limit is 1 MiB)."""
SWEEP_YIELD_EVERY = 200
"""Objects re-evaluated by a sweep between two yields to the event loop."""


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
        self._out: dict[topics.Topic, Any] = {}
        self._objects: Any = None
        self._namespaces: Any = None
        self._sweep_topic: Any = None
        self._policy_consumer: Any = None
        self._pending_dlq: list[processing.Output] = []
        self._sweeps: asyncio.Queue[str] = asyncio.Queue()
        self._posture_dirty = False
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0
        """Resource records handled so far (evaluated, skipped or dead-lettered)."""

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the policy, then start consuming; returns once partitions are assigned."""
        await kafka.create_topics(self.settings.kafka)
        await self._start_policy_follower()
        self._faust = self._build_faust()
        await self._faust.start()
        self.readiness.report("kafka", ok=True, detail="faust app started")
        for output in self._pending_dlq:
            await self._send(output)
        self._pending_dlq.clear()
        for name, coro in (
            ("evaluate-policy", self._follow_policy()),
            ("evaluate-sweeps", self._send_sweeps()),
            ("evaluate-posture", self._publish_posture()),
            ("evaluate-expiry", self._watch_expiry()),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        """Stop the tasks and the faust app (which commits offsets and flushes changelogs)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._faust is not None:
            await self._faust.stop()
        if self._policy_consumer is not None:
            await self._policy_consumer.stop()
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
            producer_acks=-1,
            # Findings come in bursts (one event can open a dozen); batch them per request.
            producer_linger=PRODUCER_LINGER_S,
            # aiokafka keeps one request in flight per partition and a full batch waits for
            # it, so 16 KiB batches (the default) cap a partition at ~16 findings per round trip.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            stream_wait_empty=False,
        )

        def topic(name: str, **extra: Any) -> Any:
            return app.topic(name, key_type=bytes, value_type=bytes, **extra)

        resources = topic(self._names[topics.Topic.RESOURCES])
        self._out = {
            t: topic(self._names[t])
            for t in (topics.Topic.FINDINGS, topics.Topic.POSTURE, topics.Topic.DLQ)
        }
        # Co-partitioned with resources, so the sweep of partition p may write p's table keys.
        self._sweep_topic = topic(f"{evaluate.app_id}-sweep", partitions=partitions, internal=True)
        self._objects = app.Table(
            "objects", partitions=partitions, key_type=bytes, value_type=bytes
        )
        self._namespaces = app.GlobalTable(
            "namespaces", partitions=partitions, key_type=bytes, value_type=bytes
        )

        async def evaluate_resources(stream: Any) -> None:
            async for event in stream.events():
                await self._on_resource(event)

        async def sweep_partitions(stream: Any) -> None:
            async for event in stream.events():
                await self._sweep(event.message.partition)

        # Registered by call, not as decorators: faust's decorators are untyped.
        app.agent(resources, name="evaluate-resources")(evaluate_resources)
        app.agent(self._sweep_topic, name="sweep-partitions")(sweep_partitions)

        async def assigned(sender: Any, assigned: Iterable[Any], **_: Any) -> None:
            mine = {tp.partition for tp in assigned if tp.topic == resources.get_topic_name()}
            self.readiness.report("partitions", ok=True, detail=f"{len(mine)} assigned")
            if mine:
                self._sweeps.put_nowait("assigned")

        async def revoked(sender: Any, revoked: Iterable[Any], **_: Any) -> None:
            assert self.processor is not None  # set before faust starts
            for tp in revoked:
                if tp.topic == resources.get_topic_name():
                    self.processor.tally.drop(tp.partition)

        app.on_partitions_assigned.connect(assigned)
        app.on_partitions_revoked.connect(revoked)
        return app

    async def _on_resource(self, event: Any) -> None:
        self.processed += 1
        message = event.message
        if message.value is None:
            return  # a tombstone follows a delete for compaction; the delete itself was handled
        headers = _headers(message.headers)
        assert self.processor is not None  # set before faust starts
        with _tracer.start_as_current_span("evaluate", context=tracing.extract(headers)):
            try:
                resource = processing.decode_resource(headers, message.value, key=message.key)
                key = message.key
                raw = self._objects.get(key)
                previous = processing.decode_state(raw) if raw is not None else None
                step = self.processor.on_resource(
                    resource,
                    previous=previous,
                    partition=message.partition,
                    namespace_obj=self._namespace(resource.cluster, resource.ref.namespace),
                )
            except codec.DecodeError as exc:
                await self._dead_letter(message, exc.reason)
                return
            except Exception as exc:  # one poison record must not stop the stream
                log.exception("evaluation failed", extra={"key": message.key})
                await self._dead_letter(message, f"evaluation failed: {type(exc).__name__}: {exc}")
                return
            if step.changed:
                self._store(key, step.state)
            is_namespace = resource.ref.kind == "Namespace" and resource.ref.api_version == "v1"
            if is_namespace and step.changed:
                ns_key = processing.namespace_key(resource.cluster, resource.ref.name).encode()
                if step.state is None:
                    self._namespaces.pop(ns_key, None)
                else:
                    self._namespaces[ns_key] = orjson.dumps(resource.object)
            for output in step.outputs:
                await self._send(output)
            self._posture_dirty = True

    async def _sweep(self, partition: int) -> None:
        assert self.processor is not None  # set before faust starts
        keys = list(self._objects.keys())
        swept = 0
        for key in keys:
            raw = self._objects.get(key)
            if raw is None:
                continue
            state = processing.decode_state(raw)
            if state.partition != partition:
                continue
            try:
                step = self.processor.sweep(
                    state, namespace_obj=self._namespace(state.cluster, state.ref.namespace)
                )
            except Exception:  # one bad object must not stop the sweep
                log.exception("re-evaluation failed", extra={"key": key})
                continue
            if step.changed and step.state is not None:
                self._store(key, step.state)
            for output in step.outputs:
                await self._send(output)
            swept += 1
            if swept % SWEEP_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        states = (processing.decode_state(v) for v in list(self._objects.values()))
        self.processor.retally((s for s in states if s.partition == partition), partition=partition)
        self._posture_dirty = True
        self.readiness.report(f"partition-{partition}", ok=True, detail="swept", critical=False)

    def _store(self, key: bytes, state: processing.ObjectState | None) -> None:
        if state is None:
            self._objects.pop(key, None)
        else:
            self._objects[key] = processing.encode_state(state)

    def _namespace(self, cluster: str, namespace: str) -> Mapping[str, Any] | None:
        if not namespace:
            return None
        raw = self._namespaces.get(processing.namespace_key(cluster, namespace).encode())
        if raw is None:
            return None
        loaded: Mapping[str, Any] = orjson.loads(raw)
        return loaded

    async def _send(self, output: processing.Output) -> None:
        # faust flushes its producer before it commits the consumed offsets, so a record is
        # consumed "done" only once its outputs were acknowledged (at least once).
        await self._out[output.topic].send(
            key=output.key.encode(),
            value=output.event.data,
            headers=kafka.record_headers(output.event),
        )

    async def _dead_letter(self, message: Any, reason: str) -> None:
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
        await self._send(output)

    # -- policy ----------------------------------------------------------------------------

    async def _start_policy_follower(self) -> None:
        name = self._names[topics.Topic.BASELINES]
        consumer = kafka.consumer(
            self.settings.kafka,
            name,
            group_id=None,
            client_id=f"{self.settings.evaluate.app_id}-policy",
        )
        await consumer.start()
        self._policy_consumer = consumer
        # Catch up to the end of the compacted topic before evaluating anything, so the first
        # findings already come from the published policy.
        while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event for this
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while not await _caught_up(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500)
            self._apply_policy_records(r for records in batch.values() for r in records)
        self.processor = processing.Processor(self.store.build(), clock=self.clock)
        self.readiness.report("policy", ok=True, detail=_describe(self.processor.policy))

    async def _follow_policy(self) -> None:
        assert self.processor is not None  # set before faust starts
        while True:
            batch = await self._policy_consumer.getmany(timeout_ms=1000)
            records = [r for records in batch.values() for r in records]
            if not records or not self._apply_policy_records(records):
                continue
            try:
                self.processor.policy = self.store.build()
            except policy_store.PolicyError as exc:
                log.error("policy not applied: %s", exc)  # noqa: TRY400 - the reason is the news
                self.readiness.report("policy", ok=False, detail=str(exc), critical=False)
                continue
            self.readiness.report("policy", ok=True, detail=_describe(self.processor.policy))
            self._sweeps.put_nowait("policy")

    def _apply_policy_records(self, records: Iterable[Any]) -> bool:
        changed = False
        for record in records:
            key = record.key.decode() if record.key else ""
            try:
                document = None
                if record.value is not None:
                    document = _decode_policy(record.headers or (), record.value)
                self.store.apply(key, document)
                changed = True
            except (codec.DecodeError, policy_store.PolicyError) as exc:
                log.warning("policy record rejected: %s", exc, extra={"key": key})
                self._pending_dlq.append(
                    processing.dead_letter(
                        str(exc),
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=dict(record.headers or ()),
                        now=self.clock(),
                    )
                )
        return changed

    # -- periodic work ---------------------------------------------------------------------

    async def _send_sweeps(self) -> None:
        resources = self._names[topics.Topic.RESOURCES]
        while True:
            reason = await self._sweeps.get()
            while not self._sweeps.empty():
                self._sweeps.get_nowait()  # several requests in a row: one sweep covers them
            for tp in sorted(self._faust.assignor.assigned_actives()):
                if tp.topic == resources:
                    await self._sweep_topic.send(
                        key=b"sweep", value=reason.encode(), partition=tp.partition
                    )
            if self._pending_dlq:
                for output in self._pending_dlq:
                    await self._send(output)
                self._pending_dlq.clear()

    async def _publish_posture(self) -> None:
        assert self.processor is not None  # set before faust starts
        interval = self.settings.evaluate.posture_interval_s
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(POSTURE_TICK_S)
            full = time.monotonic() - last_full >= interval
            if not (full or self._posture_dirty):
                continue
            self._posture_dirty = False
            if full:
                last_full = time.monotonic()
            for output in self.processor.posture(only_changed=not full):
                await self._send(output)

    async def _watch_expiry(self) -> None:
        assert self.processor is not None  # set before faust starts
        while True:
            now = self.clock()
            expiry = tracking.next_expiry(self.processor.policy.waivers, now)
            delay = EXPIRY_POLL_S
            if expiry is not None:
                delay = min(delay, max((expiry - now).total_seconds(), 0.0))
            await asyncio.sleep(delay)
            if expiry is not None and self.clock() >= expiry:
                self._sweeps.put_nowait("exception expired")


def _decode_policy(headers: Iterable[tuple[str, bytes]], value: bytes) -> policy.PolicyDocument:
    _, document = envelope.decode_record(headers, value)
    if not isinstance(document, policy.PolicyDocument):
        raise codec.DecodeError(f"not a policy document: {type(document).__name__}")
    return document


async def _caught_up(consumer: Any, ends: Mapping[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return [(str(k), bytes(v)) for k, v in headers]


def _describe(policy_set: policy_store.PolicySet) -> str:
    versions = ", ".join(f"{n}@{v}" for n, v in sorted(policy_set.versions.items()))
    return f"{versions or 'no baselines'}; {len(policy_set.waivers)} exception(s)"
