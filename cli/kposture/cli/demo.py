"""``kposture demo``: the main job end to end on this machine, against the real local environment.

It starts (or reuses) one Kafka broker and two clusters, publishes the built-in baselines with a
demo policy (enforce and dry-run namespaces), runs the pipeline (``kposture run``), deploys a
small shop, and injects seven drift scenarios one at a time, timing each detection and each
remediation. It ends with a report, also written to ``demo-report.json``, and exits 0 only when
every scenario was detected and every enforce-mode scenario fixed. The parts live in
``kposture.cli.demoing``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.console import Console

from kposture.cli.demoing import orchestrating, reporting
from kposture.cli.devenv import environment, processes

TimeoutOption = typer.Option(
    60.0, "--scenario-timeout", min=5.0, help="Seconds each scenario may take."
)
ReportOption = typer.Option(
    Path("demo-report.json"), "--report", help="Where to write the JSON report."
)


def run(
    scenario_timeout: float = TimeoutOption,
    report: Path = ReportOption,
) -> None:
    """Run the end-to-end demo: drift in, findings and fixes out, timed; exit 1 on a miss."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs do not wrap; 80 columns would break every table row
    console.print("starting the local environment (one broker, two clusters)...")
    try:
        env = environment.up(clusters_count=2)
    except processes.DevEnvError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(code=1) from exc
    console.print(
        f"environment ready in {env.start_seconds:.1f}s: kafka {env.kafka_bootstrap}, "
        f"clusters {', '.join(env.contexts)} (kubeconfig {env.kubeconfig})",
        markup=False,
    )
    run_ = orchestrating.new_run(env)
    rows = orchestrating.rows_for(run_)
    limits = orchestrating.Limits(scenario_s=scenario_timeout)
    result = asyncio.run(orchestrating.main(run_, console=console, limits=limits, rows=rows))
    reporting.write(result, report)
    reporting.show(console, result)
    console.print(f"report written to {report}", markup=False)
    console.print(
        f"the environment keeps running (kubeconfig {env.kubeconfig}); "
        "stop it with: kposture dev down",
        markup=False,
    )
    if not result["ok"]:
        for failure in result["failures"]:
            console.print(f"FAILED: {failure}", markup=False, style="bold red")
        raise typer.Exit(code=1)
    console.print("demo passed: every scenario detected, every enforce-mode scenario fixed")
