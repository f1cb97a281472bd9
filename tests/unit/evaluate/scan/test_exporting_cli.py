"""`kposture baseline lint`, `test` and `export`: validation, fixture runs and VAP files."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from kposture.cli import evaluate_cmd

runner = CliRunner()

BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: demo
version: v1.0
checks:
  - id: named
    title: ConfigMaps are labelled
    severity: low
    message: the ConfigMap has no labels
    match: {kinds: [ConfigMap]}
    validation: has(object.metadata.labels)
"""

TESTS = """\
apiVersion: kposture.io/v1
kind: BaselineTest
baseline: demo
cases:
  - name: labelled
    object: {apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {x: y}}}
    expect: {named: pass}
  - name: unlabelled
    object: {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
    expect: {named: EXPECTED}
"""


def _baseline(folder: Path, expected: str = "fail") -> Path:
    (folder / "demo.tests.yaml").write_text(TESTS.replace("EXPECTED", expected))
    path = folder / "demo.yaml"
    path.write_text(BASELINE)
    return path


def test_lint_accepts_valid_files_and_built_in_names(tmp_path: Path) -> None:
    """Valid files and built-in names lint clean: exit 0 with one line per file."""
    result = runner.invoke(
        evaluate_cmd.baseline_app, ["lint", str(_baseline(tmp_path)), "pss-restricted"]
    )
    assert result.exit_code == 0, result.output
    assert "ok  " in result.output
    assert "pss-restricted.tests.yaml" in result.output


def test_lint_reports_every_problem_with_file_line_and_check(tmp_path: Path) -> None:
    """An invalid baseline exits 2, each problem naming the file, the line and the check."""
    path = tmp_path / "bad.yaml"
    path.write_text(BASELINE.replace("severity: low", "severity: urgent").replace("has(", "has(("))
    result = runner.invoke(evaluate_cmd.baseline_app, ["lint", str(path)])
    assert result.exit_code == 2
    assert f"{path}:8: check 'named': severity must be one of" in result.output
    assert f"{path}:11: check 'named': validation:" in result.output


def test_test_prints_a_verdict_per_case_and_exits_1_on_a_failure(tmp_path: Path) -> None:
    """Fixture cases print PASS or FAIL like `kyverno test`; a wrong expectation exits 1."""
    ok = runner.invoke(evaluate_cmd.baseline_app, ["test", str(_baseline(tmp_path))])
    assert ok.exit_code == 0, ok.output
    assert "PASS  demo  labelled" in ok.output
    assert "PASS  demo  unlabelled" in ok.output
    wrong = runner.invoke(evaluate_cmd.baseline_app, ["test", str(_baseline(tmp_path, "pass"))])
    assert wrong.exit_code == 1
    assert "PASS  demo  labelled" in wrong.output
    assert "FAIL  demo  unlabelled" in wrong.output
    assert "named expected pass, got fail (the ConfigMap has no labels)" in wrong.output


def test_test_runs_the_built_in_baselines() -> None:
    """`kposture baseline test NAME` runs a built-in baseline's fixtures, all passing."""
    result = runner.invoke(evaluate_cmd.baseline_app, ["test", "pss-baseline", "cis-1.12"])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output


def test_a_baseline_without_tests_is_bad_input(tmp_path: Path) -> None:
    """Testing a baseline that declares no fixture tests exits 2 and says so."""
    path = tmp_path / "lonely.yaml"
    path.write_text(BASELINE)
    result = runner.invoke(evaluate_cmd.baseline_app, ["test", str(path)])
    assert result.exit_code == 2
    assert "no fixture tests" in result.output


def test_export_writes_policies_and_bindings_to_a_file(tmp_path: Path) -> None:
    """`export --format vap` writes YAML documents, with the action and selector asked for."""
    out = tmp_path / "vap.yaml"
    result = runner.invoke(
        evaluate_cmd.baseline_app,
        ["export", "--format", "vap", "pss-restricted@v1.25", "--output", str(out),
         "--action", "Audit", "--namespace-selector", "team=web"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    policy, binding = yaml.safe_load_all(out.read_text())
    assert policy["metadata"]["annotations"]["kposture.io/baseline"] == "pss-restricted@v1.25"
    assert binding["spec"]["validationActions"] == ["Audit"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"team": "web"}
    }


def test_export_notes_the_checks_it_cannot_express() -> None:
    """Cross-object checks are named on stderr; the policies still go to stdout."""
    result = runner.invoke(evaluate_cmd.baseline_app, ["export", "--format", "vap", "cis-1.12"])
    assert result.exit_code == 0
    assert "cis-1.12/namespaceNetworkPolicy not exported" in result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert (
        kinds.count("ValidatingAdmissionPolicy")
        == kinds.count("ValidatingAdmissionPolicyBinding")
        > 0
    )
