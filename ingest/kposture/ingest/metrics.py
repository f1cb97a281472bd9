"""The Prometheus metrics of ingest, served on ``/metrics`` by the health server.

Labels are only ever ``cluster``, ``kind`` and ``reason``: operator-chosen names and short fixed
vocabularies. No label carries object content (names, namespaces, values), both to keep the
cardinality bounded and because a label is as public as a log line.
"""

from __future__ import annotations

import prometheus_client

# Publish latency is queue wait plus broker round trip; the quality bar is one second end to end.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class Metrics:
    """Every metric ingest exports, registered in ``registry`` (a fresh one by default).

    A registry per service instance lets several instances live in one process (``kposture
    run``, the integration tests) without name clashes.
    """

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        r = self.registry
        self.received = prometheus_client.Counter(
            "kposture_ingest_events_received",
            "Watch and list events received, per cluster and kind.",
            ["cluster", "kind"],
            registry=r,
        )
        self.published = prometheus_client.Counter(
            "kposture_ingest_events_published",
            "Resource events acknowledged by Kafka, per cluster and kind.",
            ["cluster", "kind"],
            registry=r,
        )
        self.suppressed = prometheus_client.Counter(
            "kposture_ingest_events_suppressed",
            "Updates dropped because only status or version noise changed.",
            ["cluster", "kind"],
            registry=r,
        )
        self.watch_restarts = prometheus_client.Counter(
            "kposture_ingest_watch_restarts",
            "Watches restarted, per reason (timeout, gone, watchdog, stream_ended, errors).",
            ["cluster", "kind", "reason"],
            registry=r,
        )
        self.relists = prometheus_client.Counter(
            "kposture_ingest_relists",
            "Full lists, per reason (initial, resync, gone, watchdog, stream_ended, errors).",
            ["cluster", "kind", "reason"],
            registry=r,
        )
        self.synthetic_deletes = prometheus_client.Counter(
            "kposture_ingest_synthetic_deletes",
            "Deletes inferred by a relist (the watch missed them).",
            ["cluster", "kind"],
            registry=r,
        )
        self.publish_latency = prometheus_client.Histogram(
            "kposture_ingest_publish_latency_seconds",
            "From the watcher observing a change to Kafka acknowledging its record.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_failures = prometheus_client.Counter(
            "kposture_ingest_publish_failures",
            "Failed deliveries to Kafka (each is retried), per reason.",
            ["reason"],
            registry=r,
        )
        self.buffer_depth = prometheus_client.Gauge(
            "kposture_ingest_buffer_depth",
            "Events waiting between the watchers and the Kafka producer.",
            registry=r,
        )
        self.last_contact = prometheus_client.Gauge(
            "kposture_ingest_last_contact_timestamp_seconds",
            "Unix time of the last successful response from each cluster's apiserver.",
            ["cluster"],
            registry=r,
        )
        self.cluster_up = prometheus_client.Gauge(
            "kposture_ingest_cluster_up",
            "1 while every watcher of the cluster is healthy, 0 while any is failing.",
            ["cluster"],
            registry=r,
        )
        self.kinds_skipped = prometheus_client.Gauge(
            "kposture_ingest_kinds_skipped",
            "Configured kinds the cluster does not serve (1 per skipped kind).",
            ["cluster", "kind"],
            registry=r,
        )
