"""``kposture audit verify``: check the audit topic's hash chain from its first record.

Register as ``app.add_typer(audit_cmd.app, name="audit")``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from kposture.cli import topics_cmd
from kposture.remediate import auditing
from kposture.runtime import kafka
from kposture.schemas import topics

app = typer.Typer(help="The tamper-evident audit trail of remediation.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")


@app.callback()
def _group() -> None:
    """The tamper-evident audit trail of remediation."""


@app.command()
def verify(config: Path | None = ConfigOption) -> None:
    """Exit 0 when the chain is intact; else exit 1 naming the first broken record."""
    settings = topics_cmd.load_settings(config)
    topic = kafka.topic_name(settings.kafka, topics.Topic.AUDIT)
    records = asyncio.run(auditing.read_all(settings.kafka, topic))
    broken = auditing.verify(records)
    if broken is not None:
        typer.echo(f"{topic}: chain broken at {broken}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{topic}: {len(records)} record(s), chain intact")
