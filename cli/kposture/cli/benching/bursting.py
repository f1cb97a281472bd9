"""The burst phase of ``kposture bench``: evaluate's CPU per event when it has work queued.

Under the churn of the bench (tens of writes per second) evaluate idles most of the time, so
its CPU in the churn window is mostly the fixed cost of a running worker (timers, polls,
commits), not the cost of an event. The burst measures the cost of an event: after the churn,
the bench publishes a synthetic fleet (``kposture.evaluate.synthetic``: objects modelled on
real manifests, under their own cluster names) straight onto the resources topic, first every
object ``added`` (a cold load), then a mix of changed, status-only and resync updates, and
reads the evaluate process's CPU time from ``/proc`` around each part, until evaluate has
committed all of it. The records are produced by the bench process, never by evaluate, so
their cost is not counted; evaluate's idle CPU rate (measured before ingest started) gives
the ``less_idle`` figures for the moments it waited for records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kposture.cli.benching import measuring, observing, services
from kposture.evaluate import synthetic
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, resources, topics

__all__ = ["burst", "produce"]

_CATCH_UP_TIMEOUT_S = 300.0
_CATCH_UP_POLL_S = 0.1


async def produce(
    settings: settings_mod.Settings, stream: Sequence[resources.ResourceEvent]
) -> None:
    """Publish ``stream`` to the resources topic as ingest would (CloudEvents, keyed)."""
    producer = kafka.producer(settings.kafka, client_id="kposture-bench")
    await producer.start()
    try:
        name = kafka.topic_name(settings.kafka, topics.Topic.RESOURCES)
        pending = []
        for event in stream:
            wrapped = envelope.wrap(
                event,
                event_type=codec.resource_type(event.change),
                source=f"kposture://{event.cluster}/ingest",
                subject=event.ref.subject,
            )
            # Not ``kafka.publish``: it waits for each acknowledgement, one round trip a record.
            pending.append(
                await producer.send(
                    name,
                    value=wrapped.data,
                    key=event.key.encode(),
                    headers=kafka.record_headers(wrapped),
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def burst(
    settings: settings_mod.Settings,
    *,
    evaluate: services.Service,
    observer: observing.Observer,
    objects: int,
    events: int,
    idle_cpu_per_second: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Publish a synthetic fleet and its updates; evaluate's CPU per event for each part."""
    fleet = synthetic.fleet(objects, seed=seed)
    added = synthetic.added(fleet)
    mixed = list(synthetic.updates(fleet, events, seed=seed + 1))
    rss_before = evaluate.sample().rss_bytes
    # The cold load in two halves of the same mix of kinds: what the second half adds to a
    # worker that the first warmed up (caches, buffers, its backlog's peak) is the cost of
    # tracking more objects.
    half = len(added) // 2
    first = await _part(settings, added[:half], evaluate, observer, idle_cpu_per_second)
    rss_half = evaluate.sample().rss_bytes
    second = await _part(settings, added[half:], evaluate, observer, idle_cpu_per_second)
    rss_cold = evaluate.sample().rss_bytes
    cold = _joined(first, second, idle_cpu_per_second)
    updates = await _part(settings, [e for _, e in mixed], evaluate, observer, idle_cpu_per_second)
    rss_after = evaluate.sample().rss_bytes
    counts = {name: sum(1 for kind, _ in mixed if kind == name) for name, _ in synthetic.UPDATE_MIX}
    return {
        **updates,
        "mix": counts,
        "objects": len(fleet.objects),
        "cold_load": cold,
        "rss_growth_bytes": rss_after - rss_before,
        "second_half": {"objects": len(added) - half, "rss_growth_bytes": rss_cold - rss_half},
    }


def memory(burst: dict[str, Any], window: dict[str, Any]) -> dict[str, Any]:
    """Memory per tracked object: what the second half of the burst's cold load added.

    The window's RSS growth over a few hundred objects is mostly evaluate's fixed costs, and
    so is a good part of the whole burst's (the first backlog's buffers, caches filling up,
    allocator arenas): divided by the burst's objects it counted those as if every object
    cost them. The second half lands on a worker the first half warmed up, so its growth per
    object is the marginal cost of tracking one more (table entries, index, caches still
    filling). The whole burst's figures stay under ``burst``, the window's under ``window``.
    """
    objects = int(burst["objects"])
    marginal = burst["second_half"]
    added = int(marginal["objects"])
    per_object = marginal["rss_growth_bytes"] / added if added else 0.0
    whole = burst["rss_growth_bytes"] / objects if objects else 0.0
    return {
        "evaluate_rss_bytes": window["evaluate_rss_bytes"] + burst["rss_growth_bytes"],
        "rss_growth_bytes": marginal["rss_growth_bytes"],
        "tracked_objects": added,
        "bytes_per_tracked_object": round(per_object, 1),
        "mib_per_100k_objects": round(per_object * 100_000 / 2**20, 1),
        "measured_over": f"the last {added} of the {objects} objects the burst added",
        "burst": {
            "rss_growth_bytes": burst["rss_growth_bytes"],
            "tracked_objects": objects,
            "bytes_per_tracked_object": round(whole, 1),
        },
        "window": {
            k: window[k]
            for k in ("rss_growth_bytes", "tracked_objects", "bytes_per_tracked_object")
        },
    }


def _joined(
    first: dict[str, Any], second: dict[str, Any], idle_cpu_per_second: float
) -> dict[str, Any]:
    # Two consecutive parts as one: their sums, and the rates of the sums.
    events = first["events"] + second["events"]
    cpu = first["cpu_seconds"] + second["cpu_seconds"]
    seconds = first["wall_seconds"] + second["wall_seconds"]
    return {
        "events": events,
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_second": measuring.ratio(events, cpu),
        "wall_seconds": round(seconds, 2),
        "events_per_cpu_second_less_idle": measuring.ratio(
            events, cpu - idle_cpu_per_second * seconds
        ),
        "caught_up": first["caught_up"] and second["caught_up"],
    }


async def _part(
    settings: settings_mod.Settings,
    stream: Sequence[resources.ResourceEvent],
    evaluate: services.Service,
    observer: observing.Observer,
    idle_cpu_per_second: float,
) -> dict[str, Any]:
    first = await observer.processed()
    start = evaluate.sample()
    await produce(settings, stream)
    caught_up = await observer.wait_caught_up(
        timeout_s=_CATCH_UP_TIMEOUT_S, poll_s=_CATCH_UP_POLL_S
    )
    end = evaluate.sample()
    handled = await observer.processed() - first
    cpu = end.cpu_seconds - start.cpu_seconds
    seconds = end.at - start.at
    busy = cpu - idle_cpu_per_second * seconds
    return {
        "events": handled,
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_second": measuring.ratio(handled, cpu),
        "wall_seconds": round(seconds, 2),
        "events_per_cpu_second_less_idle": measuring.ratio(handled, busy),
        "caught_up": caught_up,
    }
