"""The ``kposture`` console script: one Typer application with a sub-command per activity."""

from __future__ import annotations

import importlib.metadata

import typer

from kposture.cli import (
    audit_cmd,
    bench_cmd,
    demo,
    dev,
    evaluate_cmd,
    ingest_cmd,
    remediate_cmd,
    run_cmd,
    scan_cmd,
    topics_cmd,
)

app = typer.Typer(
    name="kposture",
    help="Continuous security posture for fleets of Kubernetes clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(topics_cmd.app, name="topics")
app.command("demo")(demo.run)
app.command("run")(run_cmd.run)
app.add_typer(bench_cmd.bench_app, name="bench")
scan_cmd.register(app)
ingest_cmd.register(app)
bench_cmd.bench_app.command("ingest")(ingest_cmd.bench_ingest)
evaluate_cmd.register(app)
app.add_typer(evaluate_cmd.baseline_app, name="baseline")
app.add_typer(remediate_cmd.remediate_app, name="remediate")
app.add_typer(remediate_cmd.app, name="remediation")
app.add_typer(audit_cmd.app, name="audit")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kposture {importlib.metadata.version('kposture')}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Continuous security posture for fleets of Kubernetes clusters."""


def main() -> None:
    """Entry point of the console script."""
    app()
