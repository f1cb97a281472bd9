"""``kposture topics``: create and describe the topic catalogue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import topics

app = typer.Typer(help="The Kafka topics kposture uses.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")


def load_settings(path: Path | None) -> settings_mod.Settings:
    """Settings from ``--config`` and the environment, or exit 2 with the reason."""
    try:
        return settings_mod.load(path)
    except settings_mod.SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


@app.command()
def create(config: Path | None = ConfigOption) -> None:
    """Create every topic of the catalogue with its configuration (idempotent)."""
    settings = load_settings(config)
    result = asyncio.run(kafka.create_topics(settings.kafka))
    for name, state in sorted(result.items()):
        typer.echo(f"{name}\t{state}")


@app.command("list")
def list_(config: Path | None = ConfigOption) -> None:
    """Print the catalogue as JSON: name, key format, partitions, cleanup policy, retention."""
    settings = load_settings(config)
    specs = topics.catalogue(
        prefix=settings.kafka.topic_prefix, partitions=settings.kafka.partitions
    )
    rows = [
        {
            "name": s.name,
            "key": s.key_format,
            "partitions": s.partitions,
            "cleanup_policy": s.cleanup_policy,
            "retention_ms": s.retention_ms,
            "description": s.description,
        }
        for s in specs
    ]
    typer.echo(json.dumps(rows, indent=2))
