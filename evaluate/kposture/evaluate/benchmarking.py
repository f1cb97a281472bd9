"""``kposture bench evaluate``, in process: CPU per event, per-object latency, state per object.

Three measurements over a synthetic fleet (``synthetic``), none of which touch Kafka:

* ``engine``: ``Engine.evaluate`` alone on every object (the checks, the projection and the
  Pod view), which is the floor under everything else;
* ``processor``: ``Processor.on_resource`` as the worker calls it, with the table kept
  as the worker keeps it (a dict of encoded states, decoded and re-encoded per event), first
  for a cold start (every object ``added``), then for the update streams: only ``changed``
  events, only status updates and resyncs, and the default mix of changed, status-only and
  resync events; the posture tally is aggregated every ``TICK_EVERY`` events, as a worker's
  publication does every second (in the phase's CPU, not in any one event's);
* ``memory``: the bytes of state per tracked object, measured with ``tracemalloc`` over fresh
  copies: the ``objects`` table (keys, encoded values and the dict itself), and under
  ``state`` everything a worker keeps per object besides: the ``inventory`` table with its
  indexes (every object's entry, as its ``added`` event writes it) and the posture tally.
  Bounded caches (parsed entries, partitions, assembled inventories) are not state and are
  left out; a worker's resident growth, which includes them, is ``kposture bench``'s.

CPU is ``time.process_time`` over whole phases (``events_per_cpu_second``) and over each fifth
of a phase (its rounds, whose median discounts a slow spell of a shared machine); the per-event
distribution uses ``time.thread_time_ns`` around each call, so a busy machine that preempts
the benchmark does not inflate it. Nothing here is used by the service itself.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kposture.evaluate import synthetic
from kposture.evaluate.engine import evaluating as engine_mod
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.posture import tallying
from kposture.evaluate.stream import inventory, processing
from kposture.schemas import resources

BASELINES = ("pss-restricted", "cis-1.12", "nsa-cisa-1.2")
"""The full built-in set, as a fresh install runs it."""

UNCHANGED_MIX = (("status", 0.6), ("resync", 0.4))
"""Updates that change nothing the checks read: status updates and resyncs."""
ROUNDS = 5
"""Consecutive parts of each phase whose rates are reported apart (``Phase``)."""
TICK_EVERY = 1000
"""Events between two posture aggregations: a worker aggregates every second, and this is a
second's worth at a rate well below the target (fewer events per tick net out less)."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """CPU and latency of one run of events (times in microseconds unless named otherwise)."""

    events: int
    cpu_seconds: float
    events_per_cpu_second: float
    p50_us: float
    p99_us: float
    max_us: float
    outputs: int = 0  # records the processor asked to publish (findings, mostly)
    # The same rate over consecutive fifths of the events: a machine whose speed varies
    # over seconds (a shared host) shows it here, and the median round discounts it.
    rounds_events_per_cpu_second: tuple[float, ...] = ()
    median_round_events_per_cpu_second: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The phase as a JSON-ready mapping."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Table:
    """The ``objects`` table as a worker keeps it: encoded states by ``<cluster>/<uid>``."""

    states: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    namespaces: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def step(self, processor: processing.Processor, event: resources.ResourceEvent) -> int:
        """Process one event exactly as ``app`` does; returns the number of outputs."""
        key = event.key.encode()
        raw = self.states.get(key)
        previous = processing.decode_state(raw) if raw is not None else None
        namespace = self.namespaces.get(event.ref.namespace) if event.ref.namespace else None
        result = processor.on_resource(
            event, previous=previous, partition=0, namespace_obj=namespace
        )
        if result.changed:
            if result.state is None:
                self.states.pop(key, None)
            else:
                self.states[key] = processing.encode_state(result.state)
        if event.ref.kind == "Namespace" and result.changed:
            self.namespaces[event.ref.name] = event.object
        return len(result.outputs)


def run(
    *,
    objects: int = 10_000,
    events: int = 20_000,
    seed: int = 0,
    baselines: Sequence[str] = BASELINES,
) -> dict[str, Any]:
    """Every in-process measurement, as the JSON ``kposture bench evaluate`` prints."""
    policy = policy_store.PolicyStore(baselines).build()
    fleet = synthetic.fleet(objects, seed=seed)
    engine_phase = measure_engine(policy.engine, fleet.objects)
    processor = processing.Processor(policy)
    table = Table()
    tick = processor.tally.shares  # what a worker's posture publication aggregates

    def step(event: resources.ResourceEvent) -> int:
        return table.step(processor, event)

    cold = measure(step, synthetic.added(fleet), tick=tick)
    changed = measure(
        step,
        [e for _, e in synthetic.updates(fleet, events, seed=seed + 1, mix=(("changed", 1),))],
        tick=tick,
    )
    unchanged = measure(
        step,
        [e for _, e in synthetic.updates(fleet, events, seed=seed + 3, mix=UNCHANGED_MIX)],
        tick=tick,
    )
    updates = list(synthetic.updates(fleet, events, seed=seed + 2))
    mixed = measure(step, [e for _, e in updates], tick=tick)
    counts = {
        name: sum(1 for kind, _ in updates if kind == name) for name, _ in synthetic.UPDATE_MIX
    }
    return {
        "evaluate": {**mixed.as_json(), "mix": counts},
        "evaluate_changed_only": changed.as_json(),
        "evaluate_unchanged_only": unchanged.as_json(),
        "cold_load": cold.as_json(),
        "engine": engine_phase.as_json(),
        "memory": memory(table, synthetic.added(fleet), meta=policy.meta),
        "setup": {
            "objects": len(fleet.objects),
            "kinds": _kinds(fleet.objects),
            "baselines": list(baselines),
            "checks": sum(len(p.rules) for p in policy.engine.policies),
            "seed": seed,
        },
    }


def measure_engine(engine: engine_mod.Engine, objects: Iterable[Mapping[str, Any]]) -> Phase:
    """``Engine.evaluate`` once per object (namespace objects are not looked up)."""
    return measure(engine.evaluate, list(objects), count_outputs=False)


def measure(
    call: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    count_outputs: bool = True,
    tick: Callable[[], Any] | None = None,
) -> Phase:
    """Run ``call`` on each item: total CPU, and the CPU of each call for its distribution.

    ``tick`` runs after every ``TICK_EVERY`` items: work a worker does beside the events (the
    posture aggregation), counted in the total CPU but not in any one event's sample.
    """
    samples: list[int] = []
    outputs = 0
    clock = time.thread_time_ns
    # Where each round starts (fewer rounds when there are fewer events than rounds).
    starts = sorted({len(items) * n // ROUNDS for n in range(ROUNDS)} - {len(items)})
    first = set(starts)
    marks: list[float] = []
    gc.collect()
    started = time.process_time()
    for index, item in enumerate(items):
        if index in first:
            marks.append(time.process_time())
        before = clock()
        result = call(item)
        samples.append(clock() - before)
        if count_outputs:
            outputs += result
        if tick is not None and index % TICK_EVERY == TICK_EVERY - 1:
            tick()
    if tick is not None:
        tick()
    ended = time.process_time()
    marks.append(ended)
    counts = [end - start for start, end in itertools.pairwise([*starts, len(items)])]
    rounds = tuple(
        round(count / (end - start), 1) if end > start else 0.0
        for count, (start, end) in zip(counts, itertools.pairwise(marks), strict=True)
    )
    measured = phase(len(items), ended - started, samples, outputs=outputs)
    return dataclasses.replace(
        measured,
        rounds_events_per_cpu_second=rounds,
        median_round_events_per_cpu_second=statistics.median(rounds) if rounds else 0.0,
    )


def phase(events: int, cpu_seconds: float, samples_ns: Sequence[int], *, outputs: int = 0) -> Phase:
    """A ``Phase`` from a total CPU time and per-event samples in nanoseconds."""
    p50, p99, top = _percentiles(samples_ns)
    return Phase(
        events=events,
        cpu_seconds=round(cpu_seconds, 4),
        events_per_cpu_second=round(events / cpu_seconds, 1) if cpu_seconds > 0 else 0.0,
        p50_us=p50,
        p99_us=p99,
        max_us=top,
        outputs=outputs,
    )


def memory(
    table: Table, added: Sequence[resources.ResourceEvent], *, meta: tallying.CheckMeta
) -> dict[str, Any]:
    """The objects table per tracked object, and under ``state`` all of a worker's state."""
    return {
        **table_memory(table, tracked=len(added)),
        "state": state_memory(table, added, meta=meta, tracked=len(added)),
    }


def table_memory(table: Table, *, tracked: int) -> dict[str, Any]:
    """Bytes per tracked object of the table's state, measured on a fresh copy."""
    values = list(table.states.items())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # Fresh objects, so the measurement counts exactly what a store would hold.
        copy = {bytes(bytearray(k)): bytes(bytearray(v)) for k, v in values}
        total = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    encoded = sum(len(v) for _, v in values)
    per_object = total / tracked if tracked else 0.0
    del copy
    return {
        "tracked_objects": tracked,
        "table_bytes": total,
        "bytes_per_tracked_object": round(per_object, 1),
        "encoded_state_bytes_mean": round(encoded / len(values), 1) if values else 0.0,
        "mib_per_100k_objects": round(per_object * 100_000 / 2**20, 1),
    }


def state_memory(
    table: Table,
    added: Sequence[resources.ResourceEvent],
    *,
    meta: tallying.CheckMeta,
    tracked: int,
) -> dict[str, Any]:
    """Bytes per tracked object of all the state a worker keeps: tables, indexes and tally.

    The inventory is built from every object's ``added`` event as the app writes it (every
    view kept); the tally is rebuilt from the final table, with the checks' ``meta``.
    """
    values = list(table.states.items())
    states = [processing.decode_state(v) for _, v in values]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        objects = {bytes(bytearray(k)): bytes(bytearray(v)) for k, v in values}
        after_objects = tracemalloc.get_traced_memory()[0]
        entries = inventory.Indexed()
        for event in added:
            update = inventory.update_of(event, table=entries)
            if update is not None and update.value is not None:
                entries[update.key] = update.value
        gc.collect()
        after_inventory = tracemalloc.get_traced_memory()[0]
        written = len(entries)
        tally = tallying.Tally(meta)
        for state in states:
            tally.add(state.partition, processing.contribution_of(state))
        tally.shares()  # aggregated into scopes, as a worker's tally is after a publication
        gc.collect()
        after_tally = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    parts = {
        "objects_table": after_objects - before,
        "inventory_table": after_inventory - after_objects,
        "posture_tally": after_tally - after_inventory,
    }
    total = sum(parts.values())
    del objects, entries, tally
    return {
        "bytes_per_tracked_object": {k: round(v / tracked, 1) for k, v in parts.items()},
        "inventory_entries": written,
        "total_bytes": total,
        "mib_per_100k_objects": round(total / tracked * 100_000 / 2**20, 1) if tracked else 0.0,
    }


def _percentiles(samples_ns: Sequence[int]) -> tuple[float, float, float]:
    if not samples_ns:
        return 0.0, 0.0, 0.0
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        round(statistics.median(ordered) / 1000, 1),
        round(p99 / 1000, 1),
        round(ordered[-1] / 1000, 1),
    )


def _kinds(objects: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
