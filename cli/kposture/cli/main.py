"""The ``kposture`` console script: one Typer application with a sub-command per activity.

A sub-command's module is imported only when that sub-command runs, so ``kposture --version``
and ``kposture scan --help`` start without Kafka, Kubernetes, faust or matplotlib, and a
production install (no extras) runs every command but ``dev``, ``bench`` and ``demo``, which
need the ``dev`` extra and say so.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any

import typer
import typer.core

DIST = "kposture"
DEV_EXTRA = "dev"
EXIT_NEEDS_EXTRA = 2  # like a usage error: this install cannot run the command as asked


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where a top-level command lives, and the line ``kposture --help`` shows for it."""

    module: str
    attribute: str  # a ``typer.Typer`` (a command group) or a command function
    summary: str  # the first line of the command's own help; a test keeps the two equal
    needs_dev_extra: bool = False


COMMANDS: dict[str, Entry] = {
    "demo": Entry(
        "kposture.cli.demo",
        "run",
        "Run the end-to-end demo: drift in, findings and fixes out, timed; exit 1 on a miss.",
        needs_dev_extra=True,
    ),
    "run": Entry(
        "kposture.cli.run_cmd",
        "run",
        "Run ingest, evaluate and remediate together until interrupted.",
    ),
    "scan": Entry(
        "kposture.cli.scan_cmd",
        "scan",
        "Evaluate Kubernetes manifests against security baselines.",
    ),
    "ingest": Entry(
        "kposture.cli.ingest_cmd",
        "ingest",
        "Watch every configured cluster and publish each change to the resources topic.",
    ),
    "inventory": Entry(
        "kposture.cli.ingest_cmd",
        "inventory",
        "Print the current inventory, read from the compacted resources topic.",
    ),
    "evaluate": Entry(
        "kposture.cli.evaluate_cmd",
        "evaluate",
        "Evaluate every resource change against the baselines and publish finding transitions.",
    ),
    "dev": Entry(
        "kposture.cli.dev",
        "app",
        "Start, inspect and stop the local environment.",
        needs_dev_extra=True,
    ),
    "topics": Entry("kposture.cli.topics_cmd", "app", "The Kafka topics kposture uses."),
    "bench": Entry(
        "kposture.cli.bench_cmd",
        "bench_app",
        "Benchmarks. Without a sub-command: the whole pipeline under multi-cluster load.",
        needs_dev_extra=True,
    ),
    "baseline": Entry(
        "kposture.cli.evaluate_cmd", "baseline_app", "Baselines and exceptions as code."
    ),
    "remediate": Entry(
        "kposture.cli.remediate_cmd",
        "remediate_app",
        "Run the remediator: consume findings and fix what policy allows.",
    ),
    "remediation": Entry(
        "kposture.cli.remediate_cmd", "app", "Inspect and steer remediation actions."
    ),
    "audit": Entry(
        "kposture.cli.audit_cmd", "app", "The tamper-evident audit trail of remediation."
    ),
}
"""Every top-level command, in the order ``kposture --help`` lists them."""


def load(name: str) -> typer.core.TyperCommand | typer.core.TyperGroup:
    """Import the module of command ``name`` and build its click command."""
    entry = COMMANDS[name]
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    command: typer.core.TyperCommand | typer.core.TyperGroup
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        built = typer.main.get_command(single)
        assert isinstance(built, typer.core.TyperCommand)
        command = built
    command.name = name
    return command


def missing_dev_extra() -> list[str]:
    """The requirements of the ``dev`` extra that are not installed, as the wheel declares them.

    Empty when there is nothing to check against (kposture run from a source tree).
    """
    # Imported here, as in _version: only these two need it, and it is slow to import.
    import importlib.metadata

    try:
        requirements = importlib.metadata.requires(DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{DEV_EXTRA}["']""", marker):
            continue
        project = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        if project is None:
            continue
        try:
            importlib.metadata.distribution(project.group())
        except importlib.metadata.PackageNotFoundError:
            missing.append(project.group())
    return missing


class LazyGroup(typer.core.TyperGroup):
    """The root group: lists :data:`COMMANDS` from their summaries, imports one only to run it."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command's name, in :data:`COMMANDS` order."""
        return list(COMMANDS)

    def get_command(
        self, ctx: Any, cmd_name: str
    ) -> typer.core.TyperCommand | typer.core.TyperGroup | None:
        """The command ``cmd_name``, or a placeholder carrying its summary while help is shown."""
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self._listing:
            return typer.core.TyperCommand(name=cmd_name, help=entry.summary)
        if entry.needs_dev_extra and (missing := missing_dev_extra()):
            named = ", ".join(missing[:3])
            if len(missing) > 3:
                named += f" and {len(missing) - 3} more"
            typer.echo(
                f"error: kposture {cmd_name} needs the {DEV_EXTRA} extra (missing: {named}); "
                f"install it with: pip install '{DIST}[{DEV_EXTRA}]'",
                err=True,
            )
            raise typer.Exit(code=EXIT_NEEDS_EXTRA)
        return load(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The root help, listing the commands without importing them."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="kposture",
    cls=LazyGroup,
    help="Continuous security posture for fleets of Kubernetes clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        typer.echo(f"kposture {importlib.metadata.version(DIST)}")
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
