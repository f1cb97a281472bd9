"""Baseline fixture tests: the built-ins pass theirs, and a wrong expectation is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from kposture.evaluate.policy import loading
from kposture.evaluate.scan import fixture_tests


@pytest.mark.parametrize("name", loading.builtin_names())
def test_every_builtin_baseline_passes_its_fixture_tests(name: str) -> None:
    """Each built-in baseline ships fixture tests, and they all hold."""
    report = fixture_tests.run_fixture_tests(loading.builtin_path(name))
    assert report.ok, "\n".join(report.failures)
    assert report.cases >= 2


def test_a_wrong_expectation_is_reported_with_file_line_and_check(tmp_path: Path) -> None:
    """A fixture expecting the wrong verdict fails with its location and both results."""
    (tmp_path / "demo.yaml").write_text(
        "apiVersion: kposture.io/v1\nkind: Baseline\nname: demo\nversion: v1.0\nchecks:\n"
        "  - {id: named, title: t, severity: low, message: unnamed, match: {kinds: [ConfigMap]},"
        " validation: has(object.metadata.name)}\n"
    )
    (tmp_path / "demo.tests.yaml").write_text(
        "apiVersion: kposture.io/v1\nkind: BaselineTest\nbaseline: demo\ncases:\n"
        "  - name: nameless\n"
        "    object: {apiVersion: v1, kind: ConfigMap, metadata: {}}\n"
        "    expect: {named: pass}\n"
    )
    report = fixture_tests.run_fixture_tests(tmp_path / "demo.yaml")
    assert not report.ok
    assert report.failures == (
        "demo.tests.yaml:5: demo: 'nameless': named expected pass, got fail (unnamed)",
    )


def test_every_builtin_check_has_a_passing_and_a_failing_fixture() -> None:
    """Each check of each built-in baseline is exercised both ways by some fixture file."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for name in loading.builtin_names():
        path = fixture_tests.tests_path(loading.builtin_path(name))
        for suite in loading.load_documents(path).suites:
            suite_name = suite.baseline.partition("@")[0]
            for case in suite.cases:
                for check_id, result in case.expect.items():
                    seen.setdefault(result.value, set()).add((suite_name, check_id))
    missing = [
        f"{name}/{check.id}: no {verdict} fixture"
        for name in loading.builtin_names()
        for check in loading.builtin(name).checks
        for verdict in ("pass", "fail")
        # An inherited check may be tested through any baseline that holds the same check.
        if not any(
            (owner, check.id) in seen.get(verdict, set())
            for owner in loading.builtin_names()
            if check in loading.builtin(owner).checks
        )
    ]
    assert not missing, "\n".join(missing)


def test_builtin_controls_use_their_framework_prefix() -> None:
    """CIS checks map to cis-1.12:5.x controls and NSA checks to nsa-cisa-1.2 controls."""
    for name, prefix in (("cis-1.12", "cis-1.12:5."), ("nsa-cisa-1.2", "nsa-cisa-1.2:")):
        for check in loading.builtin(name).checks:
            assert check.controls, check.id
            assert all(control.startswith(prefix) for control in check.controls), check.id
