"""Posture contracts: ``PostureSnapshot`` (topic ``posture``) and ``Contribution``.

Evaluate publishes each object's ``Contribution`` (topic ``contributions``, compacted, a
tombstone when the object is deleted); the posture rollup adds them up per scope and publishes
one ``PostureSnapshot`` per scope on change and every minute, so a dashboard that joins late
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


class Outcome(enum.StrEnum):
    """How one check came out on one object, as posture counts it."""

    PASS = "pass"  # noqa: S105 - an enum value, not a password
    FAIL = "fail"  # a failing check, or one that could not be evaluated (``error``)
    WAIVED = "waived"  # failing, but an exception in force covers it: counts neither way


class CheckOutcome(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One check's outcome on one object, with what posture groups it by.

    Encoded as a JSON array ``[baseline, check, outcome, severity, controls]``: an object
    carries one per check that applies to it, so field names would be most of the bytes.
    """

    baseline: str
    check: str
    outcome: Outcome
    severity: common.Severity
    controls: tuple[str, ...] = ()


class Contribution(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one object adds to posture: the outcomes of the checks that apply to it.

    Keyed ``<cluster>/<uid>`` on the compacted contributions topic, so the topic holds each
    object's current contribution; a deleted object's key gets a tombstone (no value).
    ``namespace`` is empty for cluster-scoped objects.
    """

    cluster: str
    namespace: str
    outcomes: tuple[CheckOutcome, ...]
    evaluated_at: common.Timestamp
