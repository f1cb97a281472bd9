"""``kposture scan``: evaluate manifest files against baselines, for CI/CD and without Kafka.

The command reads the files (``-`` is stdin), resolves the baselines and renders the report;
parsing, evaluation and formats live in ``kposture.evaluate.scan.scanning`` and ``reporting``.

Exit codes: 0 when nothing at or above ``--fail-on`` fails (default ``low``: every failing
check but ``info`` ones; a check that errs counts as failing), 1 when something does, 2 on bad
input (an unreadable file, invalid YAML or JSON, an unknown or invalid baseline).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import console

# Only what the command's options need is imported here, so that ``kposture scan --help`` does
# not load the engine and its CEL compiler; the functions import the rest.
from kposture.evaluate.scan import reporting, scanning
from kposture.schemas import common

if TYPE_CHECKING:
    from kposture.evaluate.policy import baselines

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class BadInputError(Exception):
    """Input the scan cannot use; the message names the file (and line) and what is wrong."""


def register(app: typer.Typer) -> None:
    """Add ``scan`` to the root application."""
    app.command("scan")(scan)


def scan(
    paths: Annotated[
        list[str], typer.Argument(help="Manifest files or folders (recursively); - for stdin.")
    ],
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline",
            "-b",
            help="NAME[@VERSION] of a built-in baseline, or FILE[@VERSION] of a baseline "
            "file; repeatable. Default: " + ", ".join(scanning.DEFAULT_BASELINES) + ".",
        ),
    ] = None,
    output: Annotated[
        reporting.Format, typer.Option("--output", "-o", help="Output format.")
    ] = reporting.Format.TABLE,
    fail_on: Annotated[
        common.Severity,
        typer.Option(
            "--fail-on",
            help="Exit 1 when a check of this severity or above fails (or errs).",
        ),
    ] = scanning.DEFAULT_FAIL_ON,
) -> None:
    """Evaluate Kubernetes manifests against security baselines."""
    from kposture.evaluate.engine import evaluating

    try:
        policies = resolve_policies(baseline or list(scanning.DEFAULT_BASELINES))
        manifests, ignored = read_manifests(paths)
    except BadInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=EXIT_BAD_INPUT) from exc
    for note in ignored:
        typer.echo(f"note: {note}", err=True)
    report = scanning.scan(manifests, evaluator=evaluating.Engine(policies))
    rendered = reporting.render(report, output)
    if isinstance(rendered, str):
        sys.stdout.write(rendered + "\n")
    else:
        console.Console().print(rendered)
    if report.blocking(fail_on):
        raise typer.Exit(code=EXIT_FAILED)


def resolve_policies(refs: Sequence[str]) -> list[baselines.Policy]:
    """Resolve ``NAME[@VERSION]`` (built-in) or ``FILE[@VERSION]`` references to policies."""
    from kposture.evaluate.policy import baselines, loading

    policies: list[baselines.Policy] = []
    for ref in refs:
        name, version = baselines.split_ref(ref)
        try:
            if name.endswith((".yaml", ".yml")) or Path(name).is_file():
                found = loading.load_documents(Path(name)).baselines
                if not found:
                    raise BadInputError(f"{name}: no Baseline document")
                policies.extend(baseline.at(version) for baseline in found)
            else:
                policies.append(loading.builtin(name).at(version))
        except loading.BaselineError as exc:
            raise BadInputError(str(exc)) from exc
        except (KeyError, ValueError) as exc:
            raise BadInputError(f"baseline {ref!r}: {exc.args[0]}") from exc
        except OSError as exc:
            raise BadInputError(f"{exc.filename or name}: {exc.strerror}") from exc
    return policies


def read_manifests(paths: Sequence[str]) -> tuple[list[scanning.Manifest], list[str]]:
    """Read and parse every manifest under ``paths`` (files, folders, ``-`` for stdin)."""
    manifests: list[scanning.Manifest] = []
    ignored: list[str] = []
    for name, text in _sources(paths):
        try:
            parsed = scanning.parse_manifests(text, filename=name)
        except scanning.ManifestError as exc:
            raise BadInputError(str(exc)) from exc
        manifests.extend(parsed.manifests)
        ignored.extend(parsed.ignored)
    return manifests, ignored


def _sources(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    for raw in paths:
        if raw == "-":
            yield "-", sys.stdin.read()
            continue
        path = Path(raw)
        if path.is_dir():
            # Sorted, so reports and exit codes do not depend on the file system's order.
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES
            )
        elif path.exists():
            files = [path]
        else:
            raise BadInputError(f"{raw}: no such file or directory")
        for file in files:
            try:
                yield str(file), file.read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInputError(f"{file}: cannot read: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise BadInputError(f"{file}: not UTF-8 text ({exc.reason})") from exc
