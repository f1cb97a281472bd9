"""``kposture run``: ingest, evaluate and remediate in one process, for a single machine.

The services stay independent: each gets the same settings tree and its own tasks, health
endpoint and Kafka clients, exactly as when it runs alone; they talk only through the topics.
SIGINT or SIGTERM stops all three; if one of them fails, the others are stopped too and the
command exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from kposture.cli import serving, topics_cmd
from kposture.evaluate import app as evaluate_app
from kposture.ingest import service as ingest_service
from kposture.remediate import service as remediate_service
from kposture.runtime import health, kafka
from kposture.runtime import settings as settings_mod

log = logging.getLogger(__name__)


def run(config: Path | None = topics_cmd.ConfigOption) -> None:
    """Run ingest, evaluate and remediate together until interrupted."""
    settings = topics_cmd.load_settings(config)
    serving.setup_telemetry(settings, service="kposture")
    if not settings.clusters:
        typer.echo("error: no clusters configured (clusters: in the config file)", err=True)
        raise typer.Exit(code=2)
    serving.run_until_signalled(lambda stop: run_all(settings, stop=stop))


async def run_all(settings: settings_mod.Settings, *, stop: asyncio.Event) -> None:
    """Run the three services in this event loop until ``stop`` is set or one of them fails."""
    # Topics first, so that no service races another to auto-create them with wrong settings.
    await kafka.create_topics(settings.kafka)
    evaluator = evaluate_app.EvaluateApp(settings)

    async def remediate_until_stopped() -> None:
        task = asyncio.create_task(remediate_service.main(settings), name="kposture/remediate")
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopping.cancel()
            task.result()  # re-raises the service's failure
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def guarded(coro_name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except BaseException:
            log.exception("%s failed; stopping the other services", coro_name)
            stop.set()
            raise

    async with asyncio.TaskGroup() as group:
        group.create_task(
            guarded(
                "ingest", ingest_service.run(settings, readiness=health.Readiness(), stop=stop)
            ),
            name="kposture/ingest",
        )
        group.create_task(guarded("evaluate", evaluator.run(stop=stop)), name="kposture/evaluate")
        group.create_task(
            guarded("remediate", remediate_until_stopped()), name="kposture/remediate"
        )
