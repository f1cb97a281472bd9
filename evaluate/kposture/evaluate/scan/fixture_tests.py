"""Baseline fixture tests: objects with the expected result per check, kept next to a baseline.

``pss-baseline.yaml`` is tested by ``pss-baseline.tests.yaml`` in the same folder (documents of
kind ``BaselineTest``), the way ``kyverno test`` and ``opa test`` work. ``kposture baseline
test PATH`` calls ``run_fixture_tests`` and prints the report.
"""

from __future__ import annotations

import dataclasses
import pathlib

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import baselines, loading


@dataclasses.dataclass(frozen=True)
class FixtureReport:
    """The outcome of one baseline's fixture tests; ``ok`` when nothing failed."""

    baseline_file: str
    tests_file: str
    cases: int
    expectations: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every expectation held (and there was at least one)."""
        return not self.failures and self.expectations > 0


def tests_path(baseline_path: pathlib.Path) -> pathlib.Path:
    """Where the fixture tests of a baseline file live: ``<stem>.tests.yaml`` beside it."""
    return baseline_path.with_name(baseline_path.stem + ".tests.yaml")


def run_fixture_tests(baseline_path: pathlib.Path) -> FixtureReport:
    """Run the fixture tests declared next to ``baseline_path`` against its baselines.

    Raises ``loading.BaselineError`` when either file is invalid and ``FileNotFoundError``
    when the baseline has no tests file.
    """
    declared = loading.load_documents(baseline_path)
    tests_file = tests_path(baseline_path)
    suites = loading.load_documents(tests_file, known=declared.baselines).suites
    by_name = {baseline.name: baseline for baseline in declared.baselines}
    failures: list[str] = []
    cases = expectations = 0
    for suite in suites:
        name, version = baselines.split_ref(suite.baseline)
        baseline = by_name.get(name)
        if baseline is None:
            failures.append(f"{tests_file.name}: suite for unknown baseline {suite.baseline!r}")
            continue
        evaluator = evaluating.Engine([baseline.at(version)])
        for case in suite.cases:
            cases += 1
            # As in ``kposture scan``: a view the case does not list is an empty one.
            inventory = (
                None
                if case.inventory is None
                else {**{view: [] for view in evaluator.inventory_views}, **case.inventory}
            )
            results = evaluator.evaluate(
                case.object, namespace_obj=case.namespace_object, inventory=inventory
            )
            by_check = {result.check_id: result for result in results}
            for check_id, expected in case.expect.items():
                expectations += 1
                got = by_check.get(check_id)
                if got is None or got.result is not expected:
                    actual = "no result" if got is None else f"{got.result} ({got.message})"
                    failures.append(
                        f"{tests_file.name}:{case.line}: {suite.baseline}: {case.name!r}: "
                        f"{check_id} expected {expected}, got {actual}"
                    )
    return FixtureReport(
        baseline_file=str(baseline_path),
        tests_file=str(tests_file),
        cases=cases,
        expectations=expectations,
        failures=tuple(failures),
    )
