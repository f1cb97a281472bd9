"""``kposture dev``: the local environment (a real broker and real apiservers on loopback)."""

from __future__ import annotations

import json
import shlex

import typer

from kposture.cli.devenv import environment, processes
from kposture.runtime import settings as settings_mod

app = typer.Typer(help="Start, inspect and stop the local environment.", no_args_is_help=True)


def _fail(exc: processes.DevEnvError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command()
def up(
    clusters: int = typer.Option(2, "--clusters", min=1, max=9, help="How many clusters."),
) -> None:
    """Start one Kafka broker and N clusters (reusing what already runs); print JSON."""
    try:
        env = environment.up(clusters_count=clusters)
    except processes.DevEnvError as exc:
        raise _fail(exc) from exc
    if env.pruned_topics:
        typer.echo(
            f"deleted {len(env.pruned_topics)} topics of earlier test, bench and demo runs "
            "(idle for an hour)",
            err=True,
        )
    for warning in env.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(env.as_json()))


@app.command()
def down() -> None:
    """Stop everything and remove its state (cached builds are kept)."""
    environment.down()
    typer.echo("stopped")


@app.command()
def status() -> None:
    """Show what runs, as JSON."""
    typer.echo(json.dumps(environment.status(), indent=2, default=str))


def _running_env() -> tuple[str, str, list[str]]:
    state = environment.status()
    kafka_state = state["kafka"]
    if not isinstance(kafka_state, dict) or not kafka_state.get("running"):
        typer.echo("error: the local environment is not running; run `kposture dev up`", err=True)
        raise typer.Exit(code=1)
    contexts = sorted(state["clusters"]) if isinstance(state["clusters"], dict) else []
    return str(kafka_state["bootstrap"]), str(environment.kubeconfig_path()), contexts


@app.command()
def env() -> None:
    """Print shell ``export`` lines for the running environment."""
    bootstrap, kubeconfig, _ = _running_env()
    typer.echo(f"export KPOSTURE_KAFKA_BOOTSTRAP={shlex.quote(bootstrap)}")
    typer.echo(f"export KUBECONFIG={shlex.quote(kubeconfig)}")


@app.command()
def config() -> None:
    """Print a kposture config file (YAML) pointing every service at the local environment."""
    bootstrap, kubeconfig, contexts = _running_env()
    settings = settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(bootstrap_servers=bootstrap),
        clusters=[
            settings_mod.ClusterSettings(name=ctx, kubeconfig=kubeconfig, context=ctx)
            for ctx in contexts
        ],
    )
    typer.echo(settings_mod.dump(settings), nl=False)
