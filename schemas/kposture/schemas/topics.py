"""The topic catalogue: every topic's name, key format, partitions, cleanup policy, retention.

Names carry a configurable prefix (``kposture`` by default), so several installations can share
one Kafka cluster. ``kposture topics create`` creates them from this catalogue.
"""

from __future__ import annotations

import enum

import msgspec

DEFAULT_PREFIX = "kposture"
_DAY_MS = 24 * 3600 * 1000


class Topic(enum.StrEnum):
    """The logical topics; the real name is ``<prefix>.<value>``."""

    RESOURCES = "resources.v1"
    FINDINGS = "findings.v1"
    POSTURE = "posture.v1"
    BASELINES = "baselines.v1"
    REMEDIATIONS = "remediations.v1"
    AUDIT = "audit.v1"
    DLQ = "dlq.v1"
    CONTRIBUTIONS = "contributions.v1"


class TopicSpec(msgspec.Struct, frozen=True):
    """How one topic is laid out. ``retention_ms`` of -1 keeps records forever."""

    topic: Topic
    name: str
    key_format: str
    partitions: int
    cleanup_policy: str
    retention_ms: int
    description: str

    def configs(self) -> dict[str, str]:
        """The topic-level configs to create it with."""
        out = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if "compact" in self.cleanup_policy:
            # Compact soon after a record is superseded, so the inventory stays small, but
            # keep tombstones a day so slow consumers still see deletes.
            out["min.cleanable.dirty.ratio"] = "0.1"
            out["delete.retention.ms"] = str(_DAY_MS)
            out["segment.ms"] = str(3600 * 1000)
        return out


def name(topic: Topic, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The real topic name, e.g. ``kposture.findings.v1``."""
    return f"{prefix}.{topic.value}"


def catalogue(*, prefix: str = DEFAULT_PREFIX, partitions: int = 6) -> list[TopicSpec]:
    """Every topic with its layout. ``partitions`` is the default for the partitioned topics."""

    def spec(  # noqa: PLR0917 - a table-row builder: positional reads as a table
        topic: Topic, key: str, cleanup: str, retention_ms: int, what: str, parts: int = partitions
    ) -> TopicSpec:
        return TopicSpec(topic, name(topic, prefix=prefix), key, parts, cleanup, retention_ms, what)

    return [
        spec(
            Topic.RESOURCES,
            "<cluster>/<uid>",
            "compact",
            -1,
            "normalised object changes; compacted, so also the current inventory",
        ),
        spec(
            Topic.FINDINGS,
            "<cluster>/<uid>/<baseline>/<check>",
            "delete",
            30 * _DAY_MS,
            "finding transitions: opened, updated, resolved, waived",
        ),
        spec(
            Topic.POSTURE,
            "<cluster>/<scope>/<scope_key>",
            "compact,delete",
            30 * _DAY_MS,
            "posture counts and scores per cluster, namespace, baseline and control",
        ),
        # A single partition keeps every evaluator's view of policy in one total order.
        spec(
            Topic.BASELINES,
            "<kind>/<name>",
            "compact",
            -1,
            "published baselines and exceptions",
            parts=1,
        ),
        spec(
            Topic.REMEDIATIONS,
            "<cluster>/<uid>/<check>/<baseline_version>/<resourceVersion>",
            "compact",
            -1,
            "remediation decisions, for idempotency",
        ),
        # One partition: the audit hash chain is a single total order.
        spec(
            Topic.AUDIT,
            "<cluster>",
            "delete",
            365 * _DAY_MS,
            "hash-chained audit events of every remediation decision",
            parts=1,
        ),
        spec(
            Topic.DLQ,
            "<original key>",
            "delete",
            14 * _DAY_MS,
            "records that could not be decoded or processed, with the reason",
        ),
        spec(
            Topic.CONTRIBUTIONS,
            "<cluster>/<uid>",
            "compact",
            -1,
            "each object's current contribution to posture: its checks' outcomes; "
            "the posture rollup's input",
        ),
    ]
