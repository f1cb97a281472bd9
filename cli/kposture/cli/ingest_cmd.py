"""``kposture ingest`` (run the watchers) and ``kposture inventory`` (print what they saw).

Both are top-level commands; :func:`register` adds them to the root Typer application.
:func:`bench_ingest` is meant for a ``bench`` group: ``kposture bench ingest``.
"""

from __future__ import annotations

import asyncio
import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from kposture.cli import serving, topics_cmd
from kposture.ingest import benchmarking, service
from kposture.ingest import inventory as inventory_mod
from kposture.runtime import health
from kposture.runtime import settings as settings_mod

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")


class Output(enum.StrEnum):
    """How ``kposture inventory`` prints."""

    TABLE = "table"
    JSON = "json"


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``inventory`` to the root application."""
    app.command("ingest")(ingest)
    app.command("inventory")(inventory)


def ingest(config: Path | None = ConfigOption) -> None:
    """Watch every configured cluster and publish each change to the resources topic."""
    settings = topics_cmd.load_settings(config)
    if not settings.clusters:
        typer.echo("error: no clusters configured (the `clusters` list is empty)", err=True)
        raise typer.Exit(code=2)
    try:
        service.kinds_of(settings.ingest)
    except settings_mod.SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    serving.setup_telemetry(settings, service="kposture-ingest")
    serving.run_until_signalled(
        lambda stop: service.run(settings, readiness=health.Readiness(), stop=stop)
    )


def inventory(
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind (e.g. Deployment).")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json.")] = Output.TABLE,
    config: Path | None = ConfigOption,
) -> None:
    """Print the current inventory, read from the compacted resources topic."""
    settings = topics_cmd.load_settings(config)
    current = asyncio.run(inventory_mod.read(settings.kafka))
    events = current.select(cluster=cluster, kind=kind)
    if output is Output.JSON:
        rows = [
            {
                "cluster": e.cluster,
                "apiVersion": e.ref.api_version,
                "kind": e.ref.kind,
                "namespace": e.ref.namespace,
                "name": e.ref.name,
                "uid": e.ref.uid,
                "resourceVersion": e.ref.resource_version,
                "digest": e.digest,
                "observed_at": e.observed_at.isoformat(),
            }
            for e in events
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = [("CLUSTER", "KIND", "NAMESPACE", "NAME", "OBSERVED")]
    table += [
        (e.cluster, e.ref.kind, e.ref.namespace or "-", e.ref.name, e.observed_at.isoformat())
        for e in events
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(f"{len(events)} objects")


def bench_ingest(
    objects: Annotated[int, typer.Option(help="ConfigMaps to cold-list.")] = 1000,
    samples: Annotated[int, typer.Option(help="Write-to-topic latency samples.")] = 200,
    cluster: Annotated[
        str | None, typer.Option(help="Configured cluster (default: first).")
    ] = None,
    config: Path | None = ConfigOption,
) -> None:
    """Measure cold-list throughput into Kafka and write-to-topic latency; print JSON."""
    settings = topics_cmd.load_settings(config)
    chosen = [c for c in settings.clusters if cluster is None or c.name == cluster]
    if not chosen:
        typer.echo("error: no such cluster in the configuration", err=True)
        raise typer.Exit(code=2)
    result = asyncio.run(
        benchmarking.run(settings, cluster=chosen[0], objects=objects, samples=samples)
    )
    typer.echo(json.dumps(result.as_json(), indent=2))
