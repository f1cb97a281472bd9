"""``PostureSnapshot``: aggregate counts and a score for one scope (topic ``posture``).

Evaluate publishes one per scope on change and every minute, so a dashboard that joins late
sees the current posture within a minute.
"""

from __future__ import annotations

import enum

import msgspec

from kposture.schemas import common


class Scope(enum.StrEnum):
    """What the snapshot aggregates over."""

    CLUSTER = "cluster"
    NAMESPACE = "namespace"
    BASELINE = "baseline"
    CONTROL = "control"


class PostureSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Counts of passing and failing checks in one scope, and a score.

    ``score`` is the percentage (0-100) of evaluated (object, check) pairs that pass, weighted by
    severity; 100 means nothing fails. ``failing_by_severity`` maps a severity name to a count.
    """

    cluster: str
    scope: Scope
    scope_key: str
    passing: int
    failing: int
    waived: int
    failing_by_severity: dict[str, int]
    score: float
    computed_at: common.Timestamp

    @property
    def key(self) -> str:
        """The Kafka key: ``<cluster>/<scope>/<scope_key>``."""
        return f"{self.cluster}/{self.scope}/{self.scope_key}"
