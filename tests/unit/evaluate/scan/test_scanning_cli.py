"""`kposture scan`: exit codes, stdin, folders, bad input, and the JSON, SARIF and JUnit outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kposture.cli import scan_cmd

HARDENED_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: hardened, namespace: apps}
spec:
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: app
      resources: {limits: {cpu: 100m, memory: 64Mi}}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
"""

# Fails only low-severity checks of cis-1.12 (a container mounts a Secret as env).
SECRET_ENV_POD = HARDENED_POD.replace(
    "      image: app\n",
    "      image: app\n      env: [{name: T, valueFrom: {secretKeyRef: {name: s, key: t}}}]\n",
)

PRIVILEGED_POD = HARDENED_POD.replace("readOnlyRootFilesystem: true", "privileged: true")


@pytest.fixture
def app() -> typer.Typer:
    """A root application with `scan` registered, as main.py does."""
    root = typer.Typer()
    scan_cmd.register(root)

    @root.callback()
    def _root() -> None:
        """Keep `scan` a sub-command."""

    return root


runner = CliRunner()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_compliant_manifest_exits_0(app: typer.Typer, tmp_path: Path) -> None:
    """Nothing fails at or above the default threshold: exit 0."""
    path = _write(tmp_path, "pod.yaml", HARDENED_POD)
    result = runner.invoke(app, ["scan", str(path), "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["fail"] == 0


def test_a_failing_check_exits_1_unless_below_fail_on(app: typer.Typer, tmp_path: Path) -> None:
    """A low-severity failure fails the default gate (low) but not `--fail-on medium`."""
    path = _write(tmp_path, "pod.yaml", SECRET_ENV_POD)
    assert runner.invoke(app, ["scan", str(path), "-o", "json"]).exit_code == 1
    result = runner.invoke(app, ["scan", str(path), "-o", "json", "--fail-on", "medium"])
    assert result.exit_code == 0
    failed = [r["check"] for r in json.loads(result.stdout)["results"] if r["result"] == "fail"]
    assert failed == ["secretsAsEnv"]


def test_stdin_is_read_for_a_dash(app: typer.Typer) -> None:
    """`-` reads manifests from stdin and reports them under the file name `-`."""
    result = runner.invoke(
        app, ["scan", "-", "-o", "json", "-b", "pss-restricted"], input=PRIVILEGED_POD
    )
    assert result.exit_code == 1
    results = json.loads(result.stdout)["results"]
    assert {r["file"] for r in results} == {"-"}
    assert any(r["check"] == "privileged" and r["result"] == "fail" for r in results)


def test_a_folder_is_scanned_recursively_for_yaml_and_json(
    app: typer.Typer, tmp_path: Path
) -> None:
    """Every .yaml, .yml and .json below a folder is scanned; other files are not."""
    _write(tmp_path, "a.yaml", HARDENED_POD)
    _write(tmp_path, "deep/b.yml", HARDENED_POD.replace("hardened", "second"))
    _write(
        tmp_path,
        "deep/c.json",
        json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "third"}, "spec": {}}),
    )
    _write(tmp_path, "notes.txt", "not a manifest: [")
    result = runner.invoke(app, ["scan", str(tmp_path), "-o", "json", "-b", "pss-baseline"])
    names = {r["object"]["name"] for r in json.loads(result.stdout)["results"]}
    assert names == {"hardened", "second", "third"}


def test_invalid_yaml_exits_2_naming_file_and_line(app: typer.Typer, tmp_path: Path) -> None:
    """A YAML syntax error is bad input: exit 2, and the message says where."""
    path = _write(tmp_path, "bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n")
    result = runner.invoke(app, ["scan", str(path)])
    assert result.exit_code == 2
    assert f"{path}:5:" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.yaml"], "missing.yaml: no such file or directory"),
        (["-b", "no-such-baseline", "-"], "no built-in baseline 'no-such-baseline'"),
        (["-b", "pss-restricted@latest-ish", "-"], "not a version"),
    ],
)
def test_unusable_input_exits_2(app: typer.Typer, args: list[str], expected: str) -> None:
    """A missing file, an unknown baseline or a bad version is bad input: exit 2."""
    result = runner.invoke(app, ["scan", *args], input="")
    assert result.exit_code == 2
    assert expected in result.stderr


def test_a_baseline_file_can_be_scanned_with(app: typer.Typer, tmp_path: Path) -> None:
    """`--baseline FILE` evaluates a baseline written by the user."""
    baseline = _write(
        tmp_path,
        "named.yaml",
        "apiVersion: kposture.io/v1\nkind: Baseline\nname: named\nversion: v1.0\nchecks:\n"
        "  - {id: labelled, title: t, severity: high, message: no app label,"
        " match: {kinds: [ConfigMap]}, validation: has(object.metadata.labels)}\n",
    )
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    result = runner.invoke(app, ["scan", "-", "-o", "json", "-b", str(baseline)], input=manifest)
    assert result.exit_code == 1
    (only,) = json.loads(result.stdout)["results"]
    assert (only["baseline"], only["check"], only["message"]) == (
        "named",
        "labelled",
        "no app label",
    )


def test_the_table_groups_failures_by_object(app: typer.Typer) -> None:
    """The default output names the failing object and its checks, then a summary line."""
    result = runner.invoke(
        app, ["scan", "-", "-b", "pss-restricted"], input=PRIVILEGED_POD, env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "Pod apps/hardened" in result.stdout
    assert "pss-restricted/privileged" in result.stdout
    assert "failed," in result.stdout.splitlines()[-1]


def test_sarif_is_one_well_formed_run(app: typer.Typer) -> None:
    """SARIF 2.1.0: rules per check with levels, results pointing at the file and a line."""
    result = runner.invoke(app, ["scan", "-", "-o", "sarif"], input=PRIVILEGED_POD)
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert len({rule["id"] for rule in rules}) == len(rules)
    assert {rule["defaultConfiguration"]["level"] for rule in rules} <= {"error", "warning", "note"}
    assert run["results"]
    for item in run["results"]:
        assert rules[item["ruleIndex"]]["id"] == item["ruleId"]
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "stdin"
        assert location["region"]["startLine"] >= 1
    privileged = next(r for r in run["results"] if r["ruleId"] == "pss-restricted/privileged")
    assert privileged["level"] == "error"
    assert privileged["locations"][0]["physicalLocation"]["region"]["startLine"] == 8


def test_junit_has_a_suite_per_baseline_and_a_case_per_object_and_check(app: typer.Typer) -> None:
    """JUnit XML parses, and its counts agree with the JSON summary."""
    junit = runner.invoke(app, ["scan", "-", "-o", "junit"], input=PRIVILEGED_POD).stdout
    summary = json.loads(
        runner.invoke(app, ["scan", "-", "-o", "json"], input=PRIVILEGED_POD).stdout
    )["summary"]
    root = ET.fromstring(junit.encode())  # noqa: S314 - parses our own output, not untrusted XML
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} == {"pss-restricted@v1.37", "cis-1.12@v1.12",
                                               "nsa-cisa-1.2@v1.2"}  # fmt: skip
    assert int(root.get("tests", "0")) == sum(summary.values())
    assert (
        len(root.findall(".//testcase/failure"))
        == summary["fail"]
        == int(root.get("failures", "0"))
    )
    assert len(root.findall(".//testcase/error")) == summary["error"]
    assert len(root.findall(".//testcase/skipped")) == summary["skip"]
