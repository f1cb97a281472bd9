"""Types shared by several contracts: severities, results and references to Kubernetes objects."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated

import msgspec

Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
"""A timezone-aware time (RFC 3339 with offset); naive times are rejected on decode."""


class Severity(enum.StrEnum):
    """How bad a failing check is, from the baseline author's point of view."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """4 for critical down to 0 for info, for sorting and thresholds."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 4,
    Severity.HIGH: 3,
    Severity.MEDIUM: 2,
    Severity.LOW: 1,
    Severity.INFO: 0,
}


class Result(enum.StrEnum):
    """The outcome of one check on one object."""

    PASS = "pass"  # noqa: S105 - an enum value, not a password
    FAIL = "fail"
    ERROR = "error"  # could not be evaluated: never remediate on it
    SKIP = "skip"  # the check does not apply to this object


class ObjectRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which Kubernetes object, in which version, a record is about.

    ``namespace`` is empty for cluster-scoped objects. ``resource_version`` is the version the
    record describes; remediation uses it (with ``uid``) as a precondition.
    """

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str = ""
    resource_version: str = ""

    @property
    def subject(self) -> str:
        """The CloudEvents subject: ``<namespace>/<kind>/<name>`` (namespace empty if none)."""
        return f"{self.namespace}/{self.kind}/{self.name}"


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC (the only kind of time our contracts carry)."""
    return dt.datetime.now(dt.UTC)
