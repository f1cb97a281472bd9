"""What one scenario produced: its timings, its outcome, and whether it passed (plain data)."""

from __future__ import annotations

import dataclasses

from kposture.cli.demoing import scenarios

Expect = scenarios.Expect


def ms(start: float | None, end: float | None) -> float | None:
    """Milliseconds from ``start`` to ``end`` (epoch seconds), or None if either is missing."""
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 1)


@dataclasses.dataclass
class ScenarioResult:
    """The measured story of one scenario; filled in as it unfolds."""

    scenario: scenarios.Scenario
    cluster: str
    namespace: str
    name: str
    status: str = "waiting"
    uid: str = ""
    written_at: float | None = None  # client-side time of the API write (epoch s)
    detected_at: float | None = None  # the matching `opened` finding's time on the topic
    detected_check: str = ""
    detected_baseline: str = ""
    severity: str = ""
    fixed_at: float | None = None  # first of: re-read shows it fixed, audit `applied`
    fixed_by: str = ""
    verified_at: float | None = None  # audit `verified` (fix holds, rollout healthy)
    resolved_at: float | None = None  # the matching finding's `resolved`
    decided_at: float | None = None  # dry-run audited, or pending approval recorded
    action_id: str = ""
    rationale: str = ""
    audit_trail: list[str] = dataclasses.field(default_factory=list)
    error: str = ""

    @property
    def detect_ms(self) -> float | None:
        """Time to detect: the API write to the `opened` finding on the findings topic."""
        return ms(self.written_at, self.detected_at)

    @property
    def remediate_ms(self) -> float | None:
        """Time to remediate: the API write to the object observed fixed (or audit applied)."""
        return ms(self.written_at, self.fixed_at)

    @property
    def detected(self) -> bool:
        """Whether the drift was detected."""
        return self.detected_at is not None

    @property
    def fixed(self) -> bool:
        """Whether the drift was undone."""
        return self.fixed_at is not None

    @property
    def ok(self) -> bool:
        """Detected, and fixed when the scenario runs in enforce mode with a fix."""
        return self.detected and (self.scenario.expect is not Expect.FIXED or self.fixed)

    def failure(self) -> str | None:
        """Why the scenario failed, or None."""
        if not self.detected:
            return f"{self.scenario.id}: not detected ({self.error or 'no opened finding'})"
        if self.scenario.expect is Expect.FIXED and not self.fixed:
            return f"{self.scenario.id}: not fixed ({self.error or 'no fix observed'})"
        return None

    def outcome(self) -> str:
        """A short word for what followed the detection."""
        expect = self.scenario.expect
        if expect is Expect.FIXED:
            return "fixed" if self.fixed else "not fixed"
        if expect is Expect.DRY_RUN:
            return "dry-run audited" if self.decided_at is not None else "no dry-run seen"
        if expect is Expect.APPROVAL:
            return "awaiting approval" if self.decided_at is not None else "no approval request"
        return "detected (no automatic fix)" if self.detected else "not detected"

    def as_json(self) -> dict[str, object]:
        """The scenario's entry in ``demo-report.json``."""
        s = self.scenario
        return {
            "id": s.id,
            "title": s.title,
            "cluster": self.cluster,
            "object": {"kind": s.kind, "namespace": self.namespace, "name": self.name},
            "uid": self.uid,
            "write": str(s.op),
            "mode": str(s.mode),
            "expected": str(s.expect),
            "checks": sorted(s.checks),
            "detected": self.detected,
            "detected_by": {
                "baseline": self.detected_baseline,
                "check": self.detected_check,
                "severity": self.severity,
            }
            if self.detected
            else None,
            "time_to_detect_ms": self.detect_ms,
            "fixed": self.fixed,
            "fixed_by": self.fixed_by or None,
            "time_to_remediate_ms": self.remediate_ms,
            "time_to_verified_ms": ms(self.written_at, self.verified_at),
            "time_to_resolved_finding_ms": ms(self.written_at, self.resolved_at),
            "time_to_decision_ms": ms(self.written_at, self.decided_at),
            "action_id": self.action_id or None,
            "rationale": self.rationale or None,
            "audit_trail": list(self.audit_trail),
            "outcome": self.outcome(),
            "ok": self.ok,
            "error": self.error or None,
        }
