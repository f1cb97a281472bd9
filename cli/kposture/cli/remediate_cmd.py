"""``kposture remediate`` (the service) and ``kposture remediation`` (list, approve, pause, resume,
rollback): the operator's side of the remediator.

Register as ``app.add_typer(remediate_cmd.remediate_app, name="remediate")`` and
``app.add_typer(remediate_cmd.app, name="remediation")``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import msgspec
import typer

from kposture.cli import serving, topics_cmd
from kposture.remediate import applying, auditing, errors, recording, service
from kposture.runtime import kafka, kube
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, common, remediation, topics

remediate_app = typer.Typer(
    help="Run the remediator: consume findings and fix what policy allows.",
    invoke_without_command=True,
)
app = typer.Typer(help="Inspect and steer remediation actions.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): still say who acted
        return "unknown"


@remediate_app.callback()
def remediate(config: Path | None = ConfigOption) -> None:
    """Consume findings and remediate them (runs until interrupted)."""
    settings = topics_cmd.load_settings(config)
    serving.setup_telemetry(settings, service="kposture-remediate")
    try:
        asyncio.run(service.main(settings))
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


@app.command("list")
def list_(
    config: Path | None = ConfigOption,
    pending: bool = typer.Option(False, "--pending", help="Only actions waiting for approval."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Show planned, pending, applied and escalated actions (latest phase of each)."""
    settings = topics_cmd.load_settings(config)
    actions = asyncio.run(_actions(settings.kafka))
    if pending:
        actions = [a for a in actions if a.phase is remediation.Phase.PENDING_APPROVAL]
    for action in sorted(actions, key=lambda a: a.updated_at):
        if as_json:
            typer.echo(json.dumps(msgspec.to_builtins(action)))
        else:
            typer.echo(
                f"{action.action_id}\t{action.phase}\t{action.cluster}\t{action.ref.subject}"
                f"\t{action.check}\t{action.risk}\t{action.updated_at.isoformat()}"
            )


async def _actions(
    kafka_settings: settings_mod.KafkaSettings,
) -> list[remediation.RemediationAction]:
    async with recording.opened(kafka_settings, client_id="kposture-cli") as ledger:
        latest: dict[str, remediation.RemediationAction] = {}
        for action in ledger.ledger.decisions.values():
            current = latest.get(action.action_id)
            if current is None or action.updated_at >= current.updated_at:
                latest[action.action_id] = action
        return list(latest.values())


@app.command()
def approve(action_id: str, config: Path | None = ConfigOption) -> None:
    """Approve a pending action; the remediator carries it out and audits the approval."""
    settings = topics_cmd.load_settings(config)
    problem = asyncio.run(_approve(settings.kafka, action_id, _actor()))
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"approved {action_id}")


async def _approve(kafka_settings: settings_mod.KafkaSettings, action_id: str, actor: str) -> str:
    async with recording.opened(kafka_settings, client_id="kposture-cli") as ledger:
        action = ledger.ledger.find(action_id)
        if action is None:
            return f"no action {action_id}"
        if action.phase is not remediation.Phase.PENDING_APPROVAL:
            return f"action {action_id} is {action.phase}, not pending approval"
        approved = msgspec.structs.replace(
            action,
            phase=remediation.Phase.APPROVED,
            rationale=f"approved by {actor}",
            updated_at=common.utcnow(),
        )
        await ledger.record(approved)
        return ""


@app.command()
def pause(
    config: Path | None = ConfigOption,
    reason: str = typer.Option("paused by an operator", "--reason", help="Why (audited)."),
) -> None:
    """Kill switch: no remediation write starts more than 5 s after this returns."""
    settings = topics_cmd.load_settings(config)
    asyncio.run(_set_paused(settings.kafka, paused=True, reason=reason))
    typer.echo("paused")


@app.command()
def resume(
    config: Path | None = ConfigOption,
    reason: str = typer.Option("resumed by an operator", "--reason", help="Why."),
) -> None:
    """Lift a pause; this also closes an open circuit breaker."""
    settings = topics_cmd.load_settings(config)
    asyncio.run(_set_paused(settings.kafka, paused=False, reason=reason))
    typer.echo("resumed")


async def _set_paused(
    kafka_settings: settings_mod.KafkaSettings, *, paused: bool, reason: str
) -> None:
    async with recording.opened(kafka_settings, client_id="kposture-cli") as ledger:
        await ledger.set_paused(paused=paused, actor=_actor(), reason=reason)


@app.command()
def rollback(audit_id: str, config: Path | None = ConfigOption) -> None:
    """Restore the pre-image recorded in an audit event; the rollback is audited too."""
    settings = topics_cmd.load_settings(config)
    try:
        message = asyncio.run(rollback_action(settings, audit_id, actor=_actor()))
    except (LookupError, errors.RemediationError, kube.ClusterConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(message)


async def rollback_action(settings: settings_mod.Settings, audit_id: str, *, actor: str) -> str:
    """Roll back the action of audit event ``audit_id``; a one-line summary.

    Raises ``LookupError`` when the event or its cluster is unknown, and
    :class:`errors.RollbackError` when the fields changed since the action.
    """
    topic = kafka.topic_name(settings.kafka, topics.Topic.AUDIT)
    records = await auditing.read_all(settings.kafka, topic)
    event = next((r.event for r in records if r.event and r.event.audit_id == audit_id), None)
    if event is None:
        raise LookupError(f"no audit event {audit_id} on {topic}")
    if event.action not in (audit.Action.APPLIED, audit.Action.VERIFIED) or not event.patch:
        raise LookupError(f"audit event {audit_id} is {event.action}: nothing to roll back")
    cluster = next((c for c in settings.clusters if c.name == event.cluster), None)
    if cluster is None:
        raise LookupError(f"cluster {event.cluster!r} is not in the configuration")
    api = await kube.api_client(cluster)
    producer = kafka.producer(settings.kafka, client_id="kposture-cli")
    await producer.start()
    try:
        client = applying.KubeClient(api)
        started = common.utcnow()
        outcome, why = audit.Outcome.SUCCESS, f"rolled back by {actor} from audit {audit_id}"
        try:
            await applying.rollback(client, event.ref, pre_image=event.pre_image, patch=event.patch)
        except errors.RollbackError as exc:
            outcome, why = audit.Outcome.FAILURE, f"rollback by {actor} refused: {exc}"
            raise
        finally:
            auditor = await auditing.KafkaAuditor.resume(settings.kafka, producer)
            await auditor.record(
                auditing.new_event(
                    audit.Action.ROLLED_BACK,
                    outcome,
                    rationale=why,
                    cluster=event.cluster,
                    ref=event.ref,
                    finding_key=event.finding_key,
                    check=event.check,
                    action_id=event.action_id,
                    started_at=started,
                    pre_image=event.pre_image,
                    patch=event.patch,
                    actor=actor,
                )
            )
        return why
    finally:
        await producer.stop()
        await api.close()
