"""The publisher: a bounded buffer between the watchers and one Kafka producer.

Watchers ``put`` events into an ``asyncio.Queue`` of ``ingest.buffer_size``; when it is full they
wait, so a slow or absent broker slows the watchers down instead of losing events. One task
drains the queue in batches, wraps each event into a CloudEvent (binary mode) keyed
``<cluster>/<uid>``, and sends it through the idempotent ``acks=all`` producer. A delete is
followed by a tombstone for its key, so the compacted topic is also the inventory.

Delivery is at least once and keeps each key's order: when a send fails, the producer is
replaced and the batch is resent from the first record that was not acknowledged, *including*
later records that were, so a key's last record on the topic is always its latest state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol

from aiokafka import errors as kafka_errors

from kposture.ingest import metrics as metrics_mod
from kposture.ingest import reconciling, watching
from kposture.runtime import health, kafka, tracing
from kposture.schemas import codec, envelope, resources

log = logging.getLogger(__name__)
_tracer = tracing.tracer(__name__)

_MAX_BATCH = 1000
_SKIPPED = object()  # the result of a record that was not sent (too large)
_STOP_TIMEOUT_S = 10.0
# Errors after which the producer is replaced and the batch resent.
_DELIVERY_ERRORS = (kafka_errors.KafkaError, OSError, TimeoutError)


class Producer(Protocol):
    """What the publisher needs of a started Kafka producer (aiokafka's is the real one)."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Enqueue one record; the returned future resolves when the broker acknowledged it."""

    async def stop(self) -> None:
        """Flush and close."""


OpenProducer = Callable[[], Awaitable[Producer]]


class _Record:
    """One Kafka record to send: the key, the value (None for a tombstone), and its headers."""

    __slots__ = ("event", "headers", "key", "value")

    def __init__(
        self,
        event: resources.ResourceEvent,
        *,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        self.event = event
        self.key = event.key.encode()
        self.value = value
        self.headers = headers


def records_for(event: resources.ResourceEvent, *, traced: bool = False) -> list[_Record]:
    """The records one event becomes: its CloudEvent, then a tombstone if it is a delete.

    ``traced`` starts a span, so the record carries a ``traceparent`` that evaluate and
    remediate continue; it costs tens of microseconds per event, hence the switch
    (``telemetry.tracing``).
    """
    span = _tracer.start_as_current_span("ingest.publish") if traced else contextlib.nullcontext()
    with span:
        cloud_event = envelope.wrap(
            event,
            event_type=codec.resource_type(event.change),
            source=f"kposture://{event.cluster}/ingest",
            subject=event.ref.subject,
            time=event.observed_at,
        )
        out = [_Record(event, value=cloud_event.data, headers=kafka.record_headers(cloud_event))]
    if event.change is resources.Change.DELETED:
        out.append(_Record(event, value=None, headers=None))
    return out


class Publisher:
    """Buffers events from the watchers and publishes them to one topic, in order per key."""

    def __init__(
        self,
        *,
        topic: str,
        open_producer: OpenProducer,
        buffer_size: int,
        metrics: metrics_mod.Metrics,
        readiness: health.Readiness,
        clock: watching.Clock,
        backoff: reconciling.Backoff,
        traced: bool = False,
    ) -> None:
        self._topic = topic
        self._traced = traced
        self._open = open_producer
        self._queue: asyncio.Queue[tuple[resources.ResourceEvent, float]] = asyncio.Queue(
            maxsize=max(1, buffer_size)
        )
        self._metrics = metrics
        self._readiness = readiness
        self._clock = clock
        self._backoff = backoff
        self._producer: Producer | None = None
        readiness.report("kafka", ok=False, detail="connecting")

    async def put(self, event: resources.ResourceEvent) -> None:
        """Buffer one event; wait while the buffer is full (never drop)."""
        await self._queue.put((event, self._clock.monotonic()))
        self._metrics.buffer_depth.set(self._queue.qsize())

    def depth(self) -> int:
        """Events buffered and not yet taken by the producer task."""
        return self._queue.qsize()

    async def drain(self) -> None:
        """Wait until every buffered event has been acknowledged by Kafka."""
        await self._queue.join()

    async def run(self) -> NoReturn:
        """Publish until cancelled; the producer is stopped on the way out."""
        try:
            # Connect before the first event, so /readyz reports Kafka even when nothing changes.
            await self._ensure_producer()
            while True:
                batch = [await self._queue.get()]
                while len(batch) < _MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._metrics.buffer_depth.set(self._queue.qsize())
                await self._deliver(batch)
                for _ in batch:
                    self._queue.task_done()
        finally:
            await self._close_producer()

    async def _deliver(self, batch: Sequence[tuple[resources.ResourceEvent, float]]) -> None:
        pending = [
            (record, enqueued)
            for event, enqueued in batch
            for record in records_for(event, traced=self._traced)
        ]
        while pending:
            producer = await self._ensure_producer()
            futures: list[asyncio.Future[Any]] = []
            failure: BaseException | None = None
            try:
                for record, _ in pending:
                    futures.append(await self._send(producer, record))
            except _DELIVERY_ERRORS as exc:
                failure = exc
            results = await asyncio.gather(*futures, return_exceptions=True)
            delivered = len(results)
            for index, result in enumerate(results):
                if isinstance(result, BaseException):
                    if not isinstance(result, _DELIVERY_ERRORS):
                        raise result
                    delivered, failure = index, result
                    break
            self._acknowledged(
                [
                    item
                    for item, result in zip(pending, results[:delivered], strict=False)
                    if result is not _SKIPPED
                ]
            )
            if failure is None:
                self._backoff.reset()
                self._readiness.report("kafka", ok=True, detail="publishing")
                return
            # Resend from the first unacknowledged record, later ones included, on a new
            # producer: a key's records then end in the order they were observed.
            pending = pending[delivered:]
            await self._failed(failure)

    async def _send(self, producer: Producer, record: _Record) -> asyncio.Future[Any]:
        try:
            return await producer.send(
                self._topic, value=record.value, key=record.key, headers=record.headers
            )
        except kafka_errors.MessageSizeTooLargeError:
            # Retrying cannot help and would stall every cluster behind one object: skip it,
            # loudly. Its next change (or the next resync) is published if it shrinks.
            ref = record.event.ref
            self._metrics.publish_failures.labels(reason="MessageSizeTooLargeError").inc()
            log.exception(
                "object too large for Kafka, not published",
                extra={
                    "cluster": record.event.cluster,
                    "kind": ref.kind,
                    "namespace": ref.namespace,
                    "object": ref.name,
                    "bytes": len(record.value or b""),
                },
            )
            skipped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            skipped.set_result(_SKIPPED)
            return skipped

    def _acknowledged(self, delivered: Sequence[tuple[_Record, float]]) -> None:
        now = self._clock.monotonic()
        for record, enqueued in delivered:
            if record.value is None:
                continue  # the tombstone of an event already counted
            event = record.event
            self._metrics.published.labels(cluster=event.cluster, kind=event.ref.kind).inc()
            self._metrics.publish_latency.observe(now - enqueued)

    async def _ensure_producer(self) -> Producer:
        while self._producer is None:
            try:
                self._producer = await self._open()
                self._readiness.report("kafka", ok=True, detail="connected")
            except _DELIVERY_ERRORS as exc:
                await self._failed(exc)
        return self._producer

    async def _failed(self, exc: BaseException) -> None:
        reason = type(exc).__name__
        self._metrics.publish_failures.labels(reason=reason).inc()
        self._readiness.report("kafka", ok=False, detail=f"unavailable: {reason}")
        await self._close_producer()
        delay = self._backoff.next_delay()
        log.warning("kafka unavailable, retrying", extra={"reason": reason, "retry_in_s": delay})
        await self._clock.sleep(delay)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # A producer that cannot reach its broker may take long to flush; what it holds is
        # resent anyway, so give up waiting after a while.
        with contextlib.suppress(*_DELIVERY_ERRORS):
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await producer.stop()
