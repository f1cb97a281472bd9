"""``kposture evaluate`` (run the stream processor) and ``kposture baseline publish``.

:func:`register` adds ``evaluate`` to the root application; :func:`register_baseline` adds
``publish`` to the ``baseline`` group (``baseline_app`` is a ready group holding only it, for
when no other ``baseline`` group exists).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from kposture.cli import topics_cmd
from kposture.evaluate import app as evaluate_app
from kposture.evaluate import loading, policy_store
from kposture.runtime import kafka, logs, tracing
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, policy, topics

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")

baseline_app = typer.Typer(help="Baselines and exceptions as code.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root application."""
    app.command("evaluate")(evaluate)


def register_baseline(group: typer.Typer) -> None:
    """Add ``publish`` to a ``baseline`` command group."""
    group.command("publish")(publish)


def evaluate(config: Path | None = ConfigOption) -> None:
    """Evaluate every resource change against the baselines and publish finding transitions."""
    settings = topics_cmd.load_settings(config)
    logs.setup(level=settings.telemetry.log_level, fmt=settings.telemetry.log_format)
    if settings.telemetry.tracing:
        tracing.setup("kposture-evaluate", console=settings.telemetry.trace_console_export)
    try:
        asyncio.run(_run_until_signalled(settings))
    except policy_store.PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


async def _run_until_signalled(settings: settings_mod.Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await evaluate_app.EvaluateApp(settings).run(stop=stop)


def publish(
    paths: Annotated[list[Path], typer.Argument(help="Baseline/exception files or folders.")],
    publisher: Annotated[
        str | None, typer.Option(help="Who publishes (default: the current user).")
    ] = None,
    config: Path | None = ConfigOption,
) -> None:
    """Validate baselines and exceptions, then publish them to the baselines topic."""
    settings = topics_cmd.load_settings(config)
    try:
        documents = policy_store.documents_from_paths(paths, publisher=publisher)
    except loading.BaselineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    except OSError as exc:
        typer.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(code=2) from exc
    if not documents:
        typer.echo("error: no Baseline or Exception document found", err=True)
        raise typer.Exit(code=2)
    asyncio.run(_publish(settings, documents))
    for document in documents:
        typer.echo(f"published {document.key} {document.version}")


async def _publish(settings: settings_mod.Settings, documents: list[policy.PolicyDocument]) -> None:
    await kafka.create_topics(settings.kafka)
    producer = kafka.producer(settings.kafka, client_id="kposture-baseline-publish")
    await producer.start()
    try:
        topic = kafka.topic_name(settings.kafka, topics.Topic.BASELINES)
        for document in documents:
            event = envelope.wrap(
                document,
                event_type=codec.POLICY_TYPE,
                source=f"kposture://-/cli/{document.publisher}",
                subject=document.key,
            )
            await kafka.publish(producer, topic, key=document.key, event=event)
    finally:
        await producer.stop()


register_baseline(baseline_app)
