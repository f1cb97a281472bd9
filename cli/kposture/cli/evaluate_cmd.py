"""``kposture evaluate`` (run the stream processor) and the ``kposture baseline`` commands.

:func:`register` adds ``evaluate`` to the root application; :func:`register_baseline` adds
``publish``, ``lint``, ``test`` and ``export`` to the ``baseline`` group (``baseline_app`` is a
ready group holding them, for when no other ``baseline`` group exists).
"""

from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer

from kposture.cli import scan_cmd, serving, topics_cmd
from kposture.evaluate import app as evaluate_app
from kposture.evaluate.policy import baselines, loading
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.scan import exporting, fixture_tests
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, policy, topics

ConfigOption = typer.Option(None, "--config", "-c", help="kposture config file (YAML).")

baseline_app = typer.Typer(help="Baselines and exceptions as code.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root application."""
    app.command("evaluate")(evaluate)


def register_baseline(group: typer.Typer) -> None:
    """Add ``publish``, ``lint``, ``test`` and ``export`` to a ``baseline`` command group."""
    group.command("publish")(publish)
    group.command("lint")(lint)
    group.command("test")(test)
    group.command("export")(export)


def evaluate(config: Path | None = ConfigOption) -> None:
    """Evaluate every resource change against the baselines and publish finding transitions."""
    settings = topics_cmd.load_settings(config)
    serving.setup_telemetry(settings, service="kposture-evaluate")
    try:
        serving.run_until_signalled(lambda stop: evaluate_app.EvaluateApp(settings).run(stop=stop))
    except policy_store.PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


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
    asyncio.run(publish_documents(settings, documents))
    for document in documents:
        typer.echo(f"published {document.key} {document.version}")


async def publish_documents(
    settings: settings_mod.Settings, documents: list[policy.PolicyDocument]
) -> None:
    """Publish policy documents to the baselines topic (creating the topics if needed)."""
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


# -- lint, test, export --------------------------------------------------------------------

PolicyPaths = Annotated[
    list[str],
    typer.Argument(help="Baseline files, folders (recursively) or built-in baseline names."),
]


def _policy_files(paths: Sequence[str], *, with_tests: bool) -> Iterator[Path]:
    # A built-in name stands for its file (and, for lint, its fixture tests file too).
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")
            )
        elif path.is_file():
            yield path
        elif raw in loading.builtin_names():
            yield loading.builtin_path(raw)
            if with_tests:
                yield fixture_tests.tests_path(loading.builtin_path(raw))
        else:
            typer.echo(f"error: {raw}: no such file, folder or built-in baseline", err=True)
            raise typer.Exit(code=2)


def lint(paths: PolicyPaths) -> None:
    """Validate baseline, exception and fixture files; exit 2 when any is invalid."""
    problems = 0
    for path in _policy_files(paths, with_tests=True):
        try:
            documents = loading.load_documents(path, filename=str(path))
        except loading.BaselineError as exc:
            for problem in exc.problems:
                typer.echo(str(problem))
            problems += len(exc.problems)
            continue
        except OSError as exc:
            typer.echo(f"{path}: cannot read: {exc.strerror}")
            problems += 1
            continue
        checks = sum(len(baseline.checks) for baseline in documents.baselines)
        typer.echo(
            f"ok  {path}: {len(documents.baselines)} baselines ({checks} checks), "
            f"{len(documents.waivers)} exceptions, {len(documents.suites)} test suites"
        )
    if problems:
        typer.echo(f"{problems} problem(s) found", err=True)
        raise typer.Exit(code=2)


def test(paths: PolicyPaths) -> None:
    """Run the fixture tests declared next to each baseline (``<name>.tests.yaml``).

    Prints PASS or FAIL per test case, as ``kyverno test`` does; exits 1 when any
    expectation fails and 2 when a file is invalid or a baseline has no tests.
    """
    failed = False
    for path in _tested_files(paths):
        try:
            report = fixture_tests.run_fixture_tests(path)
            declared = loading.load_documents(path).baselines
            suites = loading.load_documents(fixture_tests.tests_path(path), known=declared).suites
        except loading.BaselineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
        except FileNotFoundError as exc:
            typer.echo(f"error: {path}: no fixture tests ({exc.filename} not found)", err=True)
            raise typer.Exit(code=2) from exc
        failed |= not _print_report(report, suites)
    if failed:
        raise typer.Exit(code=1)


def _tested_files(paths: Sequence[str]) -> Iterator[Path]:
    for found in _policy_files(paths, with_tests=False):
        if found.name.endswith(".tests.yaml"):
            # A tests file named on the command line stands for the baseline it tests.
            if str(found) in paths:
                yield found.with_name(found.name.removesuffix(".tests.yaml") + ".yaml")
        elif fixture_tests.tests_path(found).is_file() or str(found) in paths:
            # In a folder, a file without tests (exceptions, say) is not a tested baseline;
            # named on the command line, its missing tests are an error.
            yield found


def _print_report(
    report: fixture_tests.FixtureReport, suites: Sequence[baselines.FixtureSuite]
) -> bool:
    tests_name = Path(report.tests_file).name
    typer.echo(f"{report.baseline_file} ({tests_name})")
    explained: set[str] = set()
    for suite in suites:
        for case in suite.cases:
            # run_fixture_tests names each failure by file, line, suite and case.
            prefix = f"{tests_name}:{case.line}: {suite.baseline}: {case.name!r}: "
            mine = [failure for failure in report.failures if failure.startswith(prefix)]
            explained.update(mine)
            typer.echo(f"  {'FAIL' if mine else 'PASS'}  {suite.baseline}  {case.name}")
            for failure in mine:
                typer.echo(f"        {failure}")
    for failure in report.failures:
        if failure not in explained:
            typer.echo(f"  FAIL  {failure}")
    if not report.expectations:
        typer.echo("  FAIL  no expectations declared")
    status = "ok" if report.ok else "FAILED"
    typer.echo(
        f"  {status}: {report.cases} cases, {report.expectations} expectations, "
        f"{len(report.failures)} failures"
    )
    return report.ok


class ExportFormat(enum.StrEnum):
    """What ``kposture baseline export`` writes."""

    VAP = "vap"  # ValidatingAdmissionPolicy + ValidatingAdmissionPolicyBinding


def export(
    sources: Annotated[
        list[str],
        typer.Argument(help="Baseline files or built-in names, each FILE|NAME[@VERSION]."),
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    action: Annotated[
        exporting.Action, typer.Option("--action", help="The bindings' validation action.")
    ] = exporting.Action.DENY,
    namespace_selector: Annotated[
        str | None,
        typer.Option(
            "--namespace-selector",
            help="Bind only in namespaces with these labels (key=value,...).",
        ),
    ] = None,
) -> None:
    """Export baselines as admission policies (the checks admission can express)."""
    del fmt  # one format so far; the option makes the choice explicit and future-proof
    try:
        policies = scan_cmd.resolve_policies(sources)
        selector = _label_selector(namespace_selector) if namespace_selector else None
    except scan_cmd.BadInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    result = exporting.export_vap(policies, action=action, namespace_selector=selector)
    for check, reason in result.skipped:
        typer.echo(f"note: {check} not exported: {reason}", err=True)
    text = exporting.to_yaml(result.objects)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {len(result.objects)} objects to {output}", err=True)


def _label_selector(text: str) -> dict[str, dict[str, str]]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise scan_cmd.BadInputError(f"--namespace-selector: expected key=value, got {item!r}")
        labels[key.strip()] = value.strip()
    return {"matchLabels": labels}


register_baseline(baseline_app)
