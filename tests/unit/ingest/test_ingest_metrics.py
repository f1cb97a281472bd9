"""Metric labels never carry object content: only cluster, kind and reason."""

from __future__ import annotations

from kposture.ingest import metrics as metrics_mod


def test_metric_labels_are_only_cluster_kind_and_reason() -> None:
    """Every label name of every ingest metric is one of cluster, kind, reason."""
    m = metrics_mod.Metrics()
    m.received.labels(cluster="c", kind="Pod").inc()
    m.watch_restarts.labels(cluster="c", kind="Pod", reason="gone").inc()
    m.publish_failures.labels(reason="KafkaTimeoutError").inc()
    m.last_contact.labels(cluster="c").set_to_current_time()
    m.publish_latency.observe(0.01)
    labels = {
        name
        for family in m.registry.collect()
        for sample in family.samples
        for name in sample.labels
    }
    assert labels <= {"cluster", "kind", "reason", "le"}  # "le": histogram buckets
