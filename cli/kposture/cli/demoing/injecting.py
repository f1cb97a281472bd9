"""Injecting one drift scenario and measuring what the pipeline makes of it.

The clock starts on the client, just before the API write. Detection is the first ``opened``
finding of one of the scenario's checks on the written object, timed by its record on the
findings topic. Then, by the scenario's expectation: for a fix, the object is re-read until the
drift is gone (or the audit says ``applied``, whichever comes first), then the ``verified``
audit is awaited; for a dry run, the remediator's ``dry-run`` decision; for a fix that needs a
human, the ``pending-approval`` decision. Every wait shares one deadline per scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from kposture.cli.demoing import display as display_mod
from kposture.cli.demoing import kubeapi, observing, results, scenarios
from kposture.schemas import audit, findings, remediation, topics

Expect = scenarios.Expect
_POLL_S = 0.2
_CLOCK_SLACK_S = 0.002  # record timestamps are whole milliseconds


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())


async def play(
    row: results.ScenarioResult,
    *,
    cluster: kubeapi.Cluster,
    observer: observing.Observer,
    show: display_mod.Display,
    run_id: str,
    timeout_s: float,
) -> None:
    """Inject ``row.scenario`` and fill ``row`` with what followed, within ``timeout_s``."""
    s = row.scenario
    subject = f"{cluster.name} {row.namespace + '/' if row.namespace else ''}{s.kind}/{row.name}"
    row.status = "injecting"
    body = s.body(row.namespace, run_id)
    written_at = time.time()
    try:
        if s.op is scenarios.Op.CREATE:
            obj = await cluster.create(body)
        else:
            obj = await cluster.patch(s.kind, namespace=row.namespace, name=row.name, patch=body)
    except kubeapi.KubeError as exc:
        row.status, row.error = "failed", f"the drift write was refused: {exc}"
        show.event(f"{s.title}: {row.error}", style="bold red")
        return
    row.written_at = written_at
    row.uid = str((obj.get("metadata") or {}).get("uid", ""))
    row.status = "injected"
    show.event(f"drift: {s.title} -> {subject}", style="bold")
    deadline = _Deadline(timeout_s)

    def since_write(seen: observing.Seen) -> bool:
        return seen.at >= written_at - _CLOCK_SLACK_S and observing.about(
            seen.model, cluster=cluster.name, uid=row.uid
        )

    def opened(seen: observing.Seen) -> bool:
        m = seen.model
        return (
            isinstance(m, findings.Finding)
            and m.state is findings.Transition.OPENED
            and m.check in s.checks
            and since_write(seen)
        )

    found = await observer.first(topics.Topic.FINDINGS, opened, timeout_s=deadline.left())
    if found is None:
        row.status, row.error = "failed", f"no opened finding within {timeout_s:.0f}s"
        show.event(f"{s.title}: NOT detected within {timeout_s:.0f}s", style="bold red")
        return
    finding = found.model
    row.detected_at = found.at
    row.detected_check, row.detected_baseline = finding.check, finding.baseline
    row.severity = str(finding.severity)
    row.status = "detected"
    show.event(
        f"detected {s.title} in {row.detect_ms:,.0f} ms: {finding.baseline}/{finding.check} "
        f"({finding.severity})",
        style="yellow",
    )
    if s.expect is Expect.FIXED:
        await _await_fix(
            row,
            cluster=cluster,
            observer=observer,
            show=show,
            since_write=since_write,
            deadline=deadline,
            finding_key=finding.key,
        )
    elif s.expect in (Expect.DRY_RUN, Expect.APPROVAL):
        await _await_decision(
            row, observer=observer, show=show, since_write=since_write, deadline=deadline
        )
    row.audit_trail = [
        f"{e.model.action}:{e.model.check}:{e.model.outcome}"
        for e in observer.records[topics.Topic.AUDIT]
        if since_write(e) and isinstance(e.model, audit.AuditEvent)
    ]


async def _await_fix(
    row: results.ScenarioResult,
    *,
    cluster: kubeapi.Cluster,
    observer: observing.Observer,
    show: display_mod.Display,
    since_write: Callable[[observing.Seen], bool],
    deadline: _Deadline,
    finding_key: str,
) -> None:
    s = row.scenario
    assert s.fixed is not None  # FIXED scenarios say how to recognise the fix

    async def reread() -> tuple[float, str]:
        while True:
            obj = await cluster.get(s.kind, namespace=row.namespace, name=row.name)
            seen_at = time.time()
            if obj is not None and s.fixed is not None and s.fixed(obj):
                return seen_at, "re-read: drift undone"
            await asyncio.sleep(_POLL_S)

    async def applied() -> tuple[float, str]:
        def match(seen: observing.Seen) -> bool:
            m = seen.model
            return (
                isinstance(m, audit.AuditEvent)
                and m.action in (audit.Action.APPLIED, audit.Action.VERIFIED)
                and m.outcome is audit.Outcome.SUCCESS
                and m.check in s.checks
                and since_write(seen)
            )

        seen = await observer.first(topics.Topic.AUDIT, match, timeout_s=deadline.left())
        if seen is None:
            await asyncio.Event().wait()  # never first: the re-read or the timeout decides
        assert seen is not None
        return seen.at, f"audit {seen.model.action} #{seen.model.seq}"

    tasks = [asyncio.create_task(reread()), asyncio.create_task(applied())]
    done, _ = await asyncio.wait(tasks, timeout=deadline.left(), return_when="FIRST_COMPLETED")
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if not done:
        row.status, row.error = "failed", "the drift was not undone in time"
        show.event(f"{s.title}: NOT fixed in time", style="bold red")
        return
    row.fixed_at, row.fixed_by = min(t.result() for t in done)
    row.status = "fixed"
    show.event(
        f"remediated {s.title} in {row.remediate_ms:,.0f} ms ({row.fixed_by})", style="green"
    )

    def verified(seen: observing.Seen) -> bool:
        m = seen.model
        # Any of the scenario's checks: they share one fix, and whichever finding the
        # remediator picked first carries it (the others find the fix already holding).
        # Other checks the drift broke on the way (allowPrivilegeEscalation) do not count.
        return (
            isinstance(m, audit.AuditEvent)
            and m.action is audit.Action.VERIFIED
            and m.check in s.checks
            and since_write(seen)
        )

    seen = await observer.first(topics.Topic.AUDIT, verified, timeout_s=deadline.left())
    if seen is not None:
        row.verified_at = seen.at
        row.rationale = seen.model.rationale
        show.event(
            f"verified {s.title} after {results.ms(row.written_at, seen.at):,.0f} ms: "
            f"{seen.model.rationale[:80]}",
            style="green",
        )

    def resolved(seen: observing.Seen) -> bool:
        m = seen.model
        return (
            isinstance(m, findings.Finding)
            and m.key == finding_key
            and m.state is findings.Transition.RESOLVED
        )

    seen = await observer.first(
        topics.Topic.FINDINGS, resolved, timeout_s=min(5.0, deadline.left())
    )
    if seen is not None:
        row.resolved_at = seen.at


async def _await_decision(
    row: results.ScenarioResult,
    *,
    observer: observing.Observer,
    show: display_mod.Display,
    since_write: Callable[[observing.Seen], bool],
    deadline: _Deadline,
) -> None:
    s = row.scenario
    phase = (
        remediation.Phase.DRY_RUN
        if s.expect is Expect.DRY_RUN
        else remediation.Phase.PENDING_APPROVAL
    )

    def decided(seen: observing.Seen) -> bool:
        m = seen.model
        return (
            isinstance(m, remediation.RemediationAction)
            and m.phase is phase
            and m.check in s.checks
            and since_write(seen)
        )

    seen = await observer.first(topics.Topic.REMEDIATIONS, decided, timeout_s=deadline.left())
    if seen is None:
        row.error = f"no {phase} decision within the scenario's time"
        show.event(f"{s.title}: {row.error}", style="red")
        return
    action = seen.model
    row.decided_at, row.action_id, row.rationale = seen.at, action.action_id, action.rationale
    after = results.ms(row.written_at, seen.at) or 0.0
    if s.expect is Expect.DRY_RUN:
        # The decision is recorded before its audit event is published: wait for the audit,
        # so "audited" is only said of a dry run the audit trail really holds.
        def dry_run_audited(seen: observing.Seen) -> bool:
            m = seen.model
            return (
                isinstance(m, audit.AuditEvent)
                and m.action is audit.Action.DRY_RUN
                and m.action_id == action.action_id
            )

        audited = await observer.first(
            topics.Topic.AUDIT, dry_run_audited, timeout_s=deadline.left()
        )
        if audited is None:
            row.error = "the dry-run decision has no dry-run audit event"
            row.decided_at = None  # not audited: the outcome must not claim it was
            show.event(f"{s.title}: {row.error}", style="red")
            return
        row.status = "dry-run audited"
        show.event(
            f"dry-run for {s.title} after {after:,.0f} ms: {action.rationale[:90]}", style="cyan"
        )
    else:
        row.status = "awaiting approval"
        show.event(
            f"approval needed for {s.title} after {after:,.0f} ms: "
            f"kposture remediation approve {action.action_id}",
            style="magenta",
        )
