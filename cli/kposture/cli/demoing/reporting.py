"""The demo's verdict: the report on the terminal and the same facts in ``demo-report.json``.

The audit chain is verified from the topic itself (every record from the first, in order,
through ``audit.verify_chain``), after the pipeline stopped, so the check covers every record
the remediator wrote during the run.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from kposture.cli.demoing import observing, results
from kposture.remediate import auditing
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, common, findings, topics

_SEVERITIES = [s.value for s in common.Severity]


@dataclasses.dataclass(frozen=True)
class ChainCheck:
    """The audit chain as read back from the topic."""

    records: int
    verified: bool
    problem: str | None

    def as_json(self) -> dict[str, object]:
        """The report's ``audit`` section."""
        return {"records": self.records, "chain_verified": self.verified, "break": self.problem}


async def verify_audit(kafka_settings: settings_mod.KafkaSettings) -> ChainCheck:
    """Read the whole audit topic and verify its hash chain."""
    topic = kafka.topic_name(kafka_settings, topics.Topic.AUDIT)
    records = await auditing.read_all(kafka_settings, topic)
    events: list[audit.AuditEvent] = []
    for record in records:
        if record.event is None:
            return ChainCheck(len(records), False, f"offset {record.offset}: {record.error}")
        events.append(record.event)
    broken = audit.verify_chain(events)
    if broken is not None:
        where = f"offset {records[broken.index].offset}, seq {broken.seq}, {broken.audit_id}"
        return ChainCheck(len(records), False, f"{where}: {broken.reason}")
    return ChainCheck(len(records), True, None)


def _by_severity(items: list[findings.Finding]) -> dict[str, int]:
    counts = collections.Counter(str(f.severity) for f in items)
    return {s: counts.get(s, 0) for s in _SEVERITIES}


def findings_summary(observer: observing.Observer, *, run_id: str) -> dict[str, object]:
    """Findings by severity: still open at the end (fleet and demo objects), opened in the run."""
    opened = [
        s.model
        for s in observer.records[topics.Topic.FINDINGS]
        if isinstance(s.model, findings.Finding) and s.model.state is findings.Transition.OPENED
    ]
    open_now = list(observer.open.values())

    def ours(f: findings.Finding) -> bool:
        return run_id in f.ref.namespace or run_id in f.ref.name

    return {
        "open_by_severity": _by_severity(open_now),
        "open_total": len(open_now),
        "open_on_demo_objects_by_severity": _by_severity([f for f in open_now if ours(f)]),
        "opened_by_severity": _by_severity(opened),
        "opened_total": len(opened),
        "transitions": len(observer.records[topics.Topic.FINDINGS]),
    }


def posture_summary(observer: observing.Observer, clusters: list[str]) -> dict[str, object]:
    """Per cluster: the first, lowest and last posture score seen."""
    out: dict[str, object] = {}
    for cluster in clusters:
        scores = [score for _, score in observer.posture.get(cluster, [])]
        out[cluster] = {
            "first": scores[0] if scores else None,
            "lowest": min(scores) if scores else None,
            "final": scores[-1] if scores else None,
            "snapshots": len(scores),
        }
    return out


def build(
    *,
    run: dict[str, Any],
    rows: list[results.ScenarioResult],
    observer: observing.Observer,
    chain: ChainCheck,
    clusters: list[str],
    run_id: str,
    problems: list[str],
) -> dict[str, Any]:
    """The whole report as plain data."""
    failures = [f for f in (r.failure() for r in rows) if f is not None]
    if not chain.verified:
        failures.append(f"audit chain not verified: {chain.problem}")
    failures.extend(problems)
    return {
        "run": run,
        "scenarios": [r.as_json() for r in rows],
        "audit": chain.as_json(),
        "findings": findings_summary(observer, run_id=run_id),
        "posture": posture_summary(observer, clusters),
        "approvals_waiting": [
            {
                "action_id": a.action_id,
                "cluster": a.cluster,
                "object": a.ref.subject.removeprefix("/"),
                "check": a.check,
                "risk": str(a.risk),
                "approve": f"kposture remediation approve {a.action_id}",
            }
            for a in observer.pending_approvals()
        ],
        "ok": not failures,
        "failures": failures,
    }


def write(report: dict[str, Any], path: Path) -> None:
    """Write the report as indented JSON."""
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _ms(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:,.0f} ms"


def show(console: Console, report: dict[str, Any]) -> None:
    """Print the report's tables."""
    table = Table(title="demo report: drift scenarios", box=box.SIMPLE_HEAD)
    for column in ("scenario", "cluster", "mode", "detected by", "detect", "remediate", "outcome"):
        table.add_column(column)
    for s in report["scenarios"]:
        by = s["detected_by"] or {}
        table.add_row(
            s["title"],
            s["cluster"],
            s["mode"],
            f"{by.get('baseline', '')}/{by.get('check', '')}" if by else "-",
            _ms(s["time_to_detect_ms"]),
            _ms(s["time_to_remediate_ms"]),
            ("ok: " if s["ok"] else "FAILED: ") + s["outcome"],
        )
    console.print(table)
    summary = report["findings"]
    severity = Table(title="findings by severity", box=box.SIMPLE_HEAD)
    for column in ("", *_SEVERITIES, "total"):
        severity.add_column(column)
    for label, key, total in (
        ("open now (fleet)", "open_by_severity", summary["open_total"]),
        ("open now (demo objects)", "open_on_demo_objects_by_severity", None),
        ("opened during the run", "opened_by_severity", summary["opened_total"]),
    ):
        counts = summary[key]
        shown_total = total if total is not None else sum(counts.values())
        severity.add_row(label, *(str(counts[s]) for s in _SEVERITIES), str(shown_total))
    console.print(severity)
    for cluster, scores in report["posture"].items():
        console.print(
            f"posture {cluster}: first {scores['first']}, lowest {scores['lowest']}, "
            f"final {scores['final']} ({scores['snapshots']} snapshots)",
            highlight=False,
        )
    chain = report["audit"]
    console.print(
        f"audit chain: {chain['records']} record(s), "
        + ("verified" if chain["chain_verified"] else f"BROKEN: {chain['break']}"),
        highlight=False,
    )
    for approval in report["approvals_waiting"]:
        console.print(
            f"approval waiting: {approval['object']} on {approval['cluster']} "
            f"({approval['check']}): {approval['approve']}",
            highlight=False,
            markup=False,
        )


def now_iso() -> str:
    """The current UTC time, RFC 3339."""
    return dt.datetime.now(dt.UTC).isoformat()
